"""Scaling out: object storage (a real S3 server), a real Ray cluster, Kubernetes manifests."""

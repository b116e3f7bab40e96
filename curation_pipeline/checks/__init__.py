"""Asset checks (Great Expectations underneath): blocking where publishing bad data would hurt."""

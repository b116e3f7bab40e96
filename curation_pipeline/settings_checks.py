"""What a run's settings must agree on before any model loads or shard is read: a model or setting the run
would not read, a decision column its scores would not hold. Each is a ``SettingsConflict`` naming the setting;
``curate run`` says it as bad input, the code location's settings file as an invalid setting."""

from __future__ import annotations

from typing import Callable

# the model settings that only some profiles or rewriters read: setting -> the registry entry of the scorer
# that reads it (``scoring.registry.SCORERS``) and the scorer's name in messages
SCORER_MODELS = {
    "scoring.clip.model": ("curation_pipeline.scoring.clip:ClipScorer", "CLIPScore"),
    "scoring.mlm.model": ("curation_pipeline.scoring.mlm.scorer:MlmFilterScorer", "MLM-Filter"),
    "scoring.aitqe_model": ("curation_pipeline.scoring.aitqe:AitqeScorer", "AITQE scorer"),
}
# the rewriter settings a kind never reads (batch_size every kind reads; vision_tower the resource refuses itself)
UNREAD_BY_REWRITER = {
    "cleaner": ("model", "prompt", "max_new_tokens", "num_beams", "device", "trust_remote_code"),
    "aitqe": ("num_beams",),  # AITQE generates greedily, as its reference
}

NameOf = Callable[[str], str]  # a setting as a message names it (``curate run`` adds its flag)


class SettingsConflict(ValueError):
    """Settings that would run, but not as they say."""


def either(choices) -> str:
    """``clip or full``, ``offline, clip, mlm or full``."""
    *rest, last = choices
    return f"{', '.join(rest)} or {last}" if rest else last


def _model_of(entry: str) -> str | None:
    """The model setting of a registry entry's scorer, if one of ``SCORER_MODELS``."""
    return next((setting for setting, (e, _) in SCORER_MODELS.items() if e == entry), None)


def check_models_used(settings: dict[str, dict], scoring, rewriting, name_of: NameOf = str) -> None:
    """A model named in ``settings`` that the run would not load, or another setting of a scorer the profile does
    not run (``--clip-prefix`` on the offline profile) or that the rewriter does not read (a prompt for the cleaner),
    is a conflict, not a run without it: ``--clip-model`` on the offline profile used to exit 0 with no clip_score.
    ``settings``: those the run was given (not the defaults); ``scoring``, ``rewriting``: the resources as built."""
    from curation_pipeline.resources import MODEL_REWRITERS
    from curation_pipeline.scoring.registry import SCORERS

    def given(setting: str):
        value = settings
        for part in setting.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        return value

    runs = dict(SCORERS)
    for setting, (entry, scorer) in SCORER_MODELS.items():
        if scoring.profile in runs[entry]:
            continue
        group = setting.rsplit(".", 1)[0]  # scoring.clip's other settings too (--clip-prefix); not all of scoring
        named = [setting] if given(setting) else []
        if group != "scoring":
            named += sorted(f"{group}.{key}" for key in given(group) or {} if f"{group}.{key}" != setting)
        if named:
            raise SettingsConflict(f"{name_of(named[0])} is set but profile {scoring.profile!r} runs no {scorer}: "
                                   f"add --profile {either(runs[entry])}")
    unread = [f"rewriter.{key}" for key in UNREAD_BY_REWRITER.get(rewriting.kind, ())
              if key in (settings.get("rewriter") or {})]
    if unread:
        setting = unread[0]
        fix = (f"add --rewriter {either(MODEL_REWRITERS)}" if setting == "rewriter.model"
               else f"leave it out{', or add --rewriter vlm' if rewriting.kind == 'aitqe' else ''}")
        raise SettingsConflict(f"{name_of(setting)} is set but rewriter {rewriting.kind!r} "
                               f"{'uses no model' if setting == 'rewriter.model' else 'never reads it'}: {fix}")


def _writers(column: str, scoring, name_of: NameOf) -> str:
    """Which registered scorer writes ``column``, in which profiles, and what else it needs."""
    from curation_pipeline.decisions.dedup import RESULT_COLUMNS
    from curation_pipeline.scoring.registry import SCORERS, scorer_classes

    for (entry, profiles), cls in zip(SCORERS, scorer_classes()):
        names = [c.name for c in cls.outputs]
        if column in names or (column in RESULT_COLUMNS and cls.name == "dup"):
            model = _model_of(entry)
            label = SCORER_MODELS[model][1] if model else cls.__name__
            if scoring.profile in profiles and model == "scoring.mlm.model":  # a metric not asked for
                return f"{label} writes it when scoring.mlm.metrics asks for its metric"
            return (f"{label} {'sets it on the scores' if column not in names else 'writes it'}, in profile "
                    f"{either(profiles)}" + (f" with {name_of(model)} set" if model == "scoring.aitqe_model"
                                             else ""))
    return "no registered scorer writes it"


def check_decision_columns(scoring, quality_column: str, keep_expression: str | None,
                           written: list[str] | None = None, name_of: NameOf = str) -> None:
    """The policy's quality_column and keep_expression's columns must be ones this run's scores hold: else
    every shard is scored, then fails its checks (``scores_in_range``: missing columns). The scores are the
    profile's declared columns; a keep_expression may also read the inventory columns the score table starts
    with and, where the profile fingerprints duplicates, the duplicate columns ``decide`` is given
    (``decisions.dedup.mark_duplicates``). Checked before the policy's thresholds are checked against the
    column's range: a column the run never writes is the mistake to name, not thresholds on its scale.
    ``written``: the columns of the scorers as loaded, once they are (a CLIP model writes no clip_sigmoid)."""
    from curation_pipeline.decisions.dedup import RESULT_COLUMNS
    from curation_pipeline.scoring.registry import columns_of, profile_columns, score_columns
    from curation_pipeline.scoring.run import INVENTORY_COLUMNS
    from curation_pipeline.scoring.selection import columns_used

    scores = profile_columns(scoring.as_profile()) if written is None else written
    declared = score_columns()
    where = f"profile {scoring.profile!r}" + (" with scoring.aitqe_model" if scoring.aitqe_model else "") + (
        " with the models given" if written is not None else "")
    numeric = ", ".join(c for c in scores if declared[c].numeric)
    profiled = set(profile_columns(scoring.as_profile()))

    def writers(column: str) -> str:
        if column in profiled:  # the profile declares it, the model given does not write it
            return f"not by the model given: {declared[column].description}"
        return _writers(column, scoring, name_of)

    if quality_column not in scores:
        raise SettingsConflict(f"policy.quality_column: decision column {quality_column!r} is not among the scores "
                               f"{where} writes ({writers(quality_column)}); pick one of its scores: {numeric}")
    readable = set(scores) | set(INVENTORY_COLUMNS)
    if set(columns_of("dup")) <= set(scores):  # the duplicate scorer runs: decide() reads the pool's groups too
        readable |= set(RESULT_COLUMNS)
    try:
        unknown = sorted(columns_used(keep_expression) - readable) if keep_expression else []
    except ValueError:  # not an expression: the policy's own check says why
        unknown = []
    if unknown:
        raise SettingsConflict(f"policy.keep_expression {keep_expression!r} reads "
                               + "; ".join(f"{c!r} ({writers(c)})" for c in unknown)
                               + f", not among the columns {where} writes; its scores: {numeric}")

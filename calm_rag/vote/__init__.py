"""The CALM core: answers read from responses, the vote across languages, vote policies and
presets, and the preference pairs the vote yields.

The regeneration stage samples again with the generator, so it stays with the pipeline's
stages (:mod:`calm_rag.pipeline.stages.regenerate`).
"""

"""Evaluation: prediction files -> official-protocol scorers (pure functions) -> metrics, tables, plots.

``scorers.score_files`` picks the readers; the scorers live one per protocol (``llava_med``,
``multiple_choice``, ``ct_rate``, ``fit_rsfg``); ``predictions`` reads and matches prediction files;
``results`` holds :class:`~longllava.eval.results.ScoreResult` and writes it out.
"""

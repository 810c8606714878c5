"""Evaluation: prediction files -> official-protocol scorers (pure functions) -> metrics, tables, plots.

``scorers.score_files`` picks the readers; the scorers live one per protocol (``llava_med``,
``multiple_choice``, ``ct_rate``, ``fit_rsfg``); ``predictions`` reads and matches prediction files;
``results`` holds :class:`~longllava.eval.results.ScoreResult` and writes it out.
"""

import lazy_loader

# Imported on first use (PEP 562), so importing the package stays fast.
__getattr__, __dir__, __all__ = lazy_loader.attach(__name__, submod_attrs={
    "scorers": ["score_files"], "llava_med": ["score_llava_med_vqa"],
    "multiple_choice": ["score_multiple_choice"], "ct_rate": ["score_ct_rate"],
    "fit_rsfg": ["score_fit_rsfg"], "results": ["ScoreResult", "write_results"],
    "predictions": ["Prediction", "read_predictions"], "benchmarks": ["BENCHMARKS", "Benchmark"],
    "runner": ["RunConfig", "RunOutcome", "run_benchmark", "run_task"],
    "vniah": ["VniahConfig", "run_vniah", "score_vniah"], "needles": ["insert_needle"]})

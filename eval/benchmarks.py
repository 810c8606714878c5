"""Names of the scored benchmarks and protocols (a dependency-free module, so the CLI stays fast)."""

BENCHMARKS = ("vqa-rad", "pathvqa", "ct-rate", "fit-rsfg")
VQA_PROTOCOLS = ("llava-med", "multiple-choice")  # the two ways VQA-RAD / PathVQA are scored

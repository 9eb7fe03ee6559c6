"""What one trial trains: families, data, training methods, the trainer and ROUGE. Knows nothing of Optuna."""
import logging

# On CPUs with AVX512-BF16, bitsandbytes warns at import that it could not download an optional
# kernel from the hub. Nothing here downloads at run time, so the warning is noise in every command.
logging.getLogger("bitsandbytes").setLevel(logging.ERROR)

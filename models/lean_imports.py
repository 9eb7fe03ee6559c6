"""transformers' model classes, imported without scikit-learn.

transformers imports `sklearn.metrics` whenever scikit-learn is installed, for one function of assisted
decoding (a draft model's confidence threshold) that this package never uses, and scikit-learn's import
is a large share of a trial process's start. It is hidden for the length of that one import only, so it
stays importable for everything after; tests/test_lean_imports.py fails if transformers changes under it.
"""
import sys

if "transformers.generation.utils" not in sys.modules and "sklearn" not in sys.modules:
    sys.modules["sklearn"] = None  # None in sys.modules reads as "not installed" to find_spec and import alike
    try:
        import transformers.generation.utils  # noqa: F401  the chain that imports sklearn.metrics
    finally:
        del sys.modules["sklearn"]

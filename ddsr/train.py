"""``python -m ddsr.train -opt X.yml [BasicSR flags]``: BasicSR's training pipeline with ddsr registered."""
import sys

from ddsr.cli import run_pipeline

if __name__ == '__main__':
    sys.exit(run_pipeline('train', sys.argv[1:]))

"""``python -m ddsr.test -opt X.yml``: BasicSR's test pipeline with ddsr registered."""
import sys

from ddsr.cli import run_pipeline

if __name__ == '__main__':
    sys.exit(run_pipeline('test', sys.argv[1:]))

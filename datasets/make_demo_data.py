"""Build the demo data set into datasets/demo (same as ``ddsr make-demo-data``)."""
import sys

from ddsr.cli import ddsr_main

if __name__ == '__main__':
    sys.exit(ddsr_main(['make-demo-data'] + sys.argv[1:]))

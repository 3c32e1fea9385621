import sys

try:
    from nnfit.cli import main
except KeyboardInterrupt:  # Ctrl-C while the command line is still loading
    sys.stderr.write("nnfit: interrupted\n")
    raise SystemExit(130) from None

raise SystemExit(main())

"""The choices of the output flags (``--ext``, ``--alpha``, ``--quality``), without cv2/numpy: ``ddsr --help`` builds
every command's parser and must stay light; :mod:`ddsr.deploy.output` implements them."""
EXTS = ('png', 'jpg', 'webp', 'auto')
ALPHA_MODES = ('bicubic', 'network')
DEFAULT_QUALITY = 95  # jpg/webp quality (chosen here: visually lossless for photos, as Real-ESRGAN users expect)

"""The maps: where a classifier's evidence lies in an image.

- :mod:`~catdog.maps.cam`: exact Class Activation Maps (fc weights x pre-pooling features), upsampling and
  display scaling; pure tensor functions, no file I/O.
- :mod:`~catdog.maps.explainers`: one interface over exact CAM and the Grad-CAM family (pytorch-grad-cam).
- :mod:`~catdog.maps.geometry`: where each feature cell's evidence comes from in the input.
"""

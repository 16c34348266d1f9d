"""The pure core: geometry and array arithmetic with no I/O, no Ray, no torch.

- :mod:`geoseg.core.grid`: the fixed patch grid, its blocks and the chunk grid (integers only);
- :mod:`geoseg.core.stitch`: patch extraction, the merger protocol and one merger per output
  kind, the single-process reference;
- :mod:`geoseg.core.volume`: reorientation of volumes to RAS and back, foreground z-scoring;
- :mod:`geoseg.core.lesions`: 3-D connected components, lesion volumes and centroids;
- :mod:`geoseg.core.water`: water indices, their histograms and the per-scene Otsu threshold;
- :mod:`geoseg.core.lines`: the pixel graph of a skeleton, strip by strip, and its networks.

These modules import numpy and scipy only (``tests/test_imports.py`` holds the boundary):
they take arrays and return arrays, so the pipeline, the reference and the tests run the very
same arithmetic.
"""

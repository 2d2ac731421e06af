"""Where real anomalies sit: the localization methods, on arrays (no files).

* :mod:`.maps`: the seed notebook's maps (mean normal, mean anomaly, ``dev``,
  ``excess``), region clean-up, ground-truth rasters and IoU;
* :mod:`.clip_level`: one anomalous clip's region against its ID's normal clips,
  with the threshold calibrated out of fold on normal clips only;
* :mod:`.id_level`: the pooled permutation test of an ID's anomalous clips against
  its normal clips (sees anomalies below one clip's noise), the "found" rule, and
  the evidence on all clips, on two halves and on a negative control;
* :mod:`.patterns`: a plain-words label for a set of regions.

The ``localize`` and ``power`` stages call these; neither holds a method of its own.
"""

"""Published DCASE 2020 Task 2 figures: what the task's baseline autoencoder scores on the real
development set. One place for the synthetic data's calibration (``analysis.calibration``,
``analysis.synthesize``) and the downstream check's quoted reference; no imports, so a stage
that reads them depends on nothing else.
"""

# The DCASE 2020 Task 2 baseline autoencoder on the development set, as published with the
# task (percent). Per type: AUC and pAUC (FPR <= 0.1); per ID: AUC.
PUBLISHED_AUC_PCT = {
    "fan": 65.83,
    "pump": 72.89,
    "slider": 84.76,
    "valve": 66.28,
    "ToyCar": 78.77,
    "ToyConveyor": 72.53,
}
PUBLISHED_PAUC_PCT = {
    "fan": 52.45,
    "pump": 59.99,
    "slider": 66.53,
    "valve": 50.98,
    "ToyCar": 67.58,
    "ToyConveyor": 60.43,
}
PUBLISHED_ID_AUC_PCT = {
    "fan": {"id_00": 54.41, "id_02": 73.40, "id_04": 61.61, "id_06": 73.92},
    "pump": {"id_00": 67.15, "id_02": 61.53, "id_04": 88.33, "id_06": 74.55},
    "slider": {"id_00": 96.19, "id_02": 78.97, "id_04": 94.30, "id_06": 69.59},
    "valve": {"id_00": 68.76, "id_02": 68.18, "id_04": 74.30, "id_06": 53.90},
    "ToyCar": {"id_01": 81.36, "id_02": 85.97, "id_03": 63.30, "id_04": 84.45},
    "ToyConveyor": {"id_01": 78.07, "id_02": 64.16, "id_03": 75.35},
}

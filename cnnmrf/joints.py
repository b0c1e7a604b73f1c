"""The 10 FLIC joints of the paper, their left/right twins and the skeleton used for drawing."""

JOINT_NAMES: tuple[str, ...] = ("lsho", "lelb", "lwri", "rsho", "relb", "rwri", "lhip", "rhip", "nose", "torso")
NUM_JOINTS = len(JOINT_NAMES)

# 0-based columns of FLIC's `coords` (2x29) for the first 9 joints; `torso` is the mean of both shoulders and hips.
FLIC_COLUMNS: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6, 9, 16)
TORSO_PARTS: tuple[int, ...] = (0, 3, 6, 7)  # lsho, rsho, lhip, rhip

# Channel permutation that swaps every left joint with its right twin (used by horizontal flips).
FLIP_PERMUTATION: tuple[int, ...] = (3, 4, 5, 0, 1, 2, 7, 6, 8, 9)
# Arm joints (left, right) pairs swapped by the observer-centric rule.
ARM_PAIRS: tuple[tuple[int, int], ...] = ((0, 3), (1, 4), (2, 5))

# PCK normaliser: distance between the ground-truth left shoulder and right hip.
NORM_PAIR: tuple[int, int] = (0, 7)

# Limbs drawn by `predict` (joint index pairs); limbs joining two left (right) joints are drawn as left (right).
SKELETON: tuple[tuple[int, int], ...] = ((0, 1), (1, 2), (3, 4), (4, 5), (0, 3), (0, 6), (3, 7), (6, 7), (8, 9))

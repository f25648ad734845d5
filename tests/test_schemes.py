import numpy as np
import pytest

from facelandmarks.schemes import IBUG68, MTCNN5, LandmarkScheme, get_scheme, ibug68_to_mtcnn5


@pytest.mark.parametrize("scheme", [IBUG68, MTCNN5])
def test_flip_permutation_is_an_involution(scheme):
    perm = scheme.flip_index
    assert sorted(perm.tolist()) == list(range(scheme.num_points))
    assert np.array_equal(perm[perm], np.arange(scheme.num_points))


def test_ibug68_layout():
    assert IBUG68.num_points == 68 == len(set(IBUG68.names))
    assert IBUG68.outer_eye_corners == (36, 45)
    perm = IBUG68.flip_index
    # the eyes swap as whole groups, corner to corner
    assert perm[36] == 45 and perm[39] == 42 and set(perm[36:42]) == set(range(42, 48))
    assert perm[0] == 16 and perm[8] == 8  # jaw ends swap, chin stays
    assert perm[30] == 30 and perm[33] == 33 and perm[51] == 51 and perm[57] == 57 and perm[62] == 62 and perm[66] == 66
    assert perm[48] == 54 and perm[60] == 64
    fixed = [i for i in range(68) if perm[i] == i]
    assert fixed == [8, 27, 28, 29, 30, 33, 51, 57, 62, 66]


def test_flip_on_real_face_keeps_right_eye_on_image_left(annotations):
    df, _ = annotations
    row = df.iloc[0]
    w = row["image_width"]
    flipped = IBUG68.flip(row["landmarks"], w)
    # the subject's right eye (36-41) is on the image left before and after the flip
    assert row["landmarks"][36:42, 0].mean() < row["landmarks"][42:48, 0].mean()
    assert flipped[36:42, 0].mean() < flipped[42:48, 0].mean()
    # flipping twice is the identity
    np.testing.assert_allclose(IBUG68.flip(flipped, w), row["landmarks"], atol=1e-4)


def test_pupils_and_mtcnn5(annotations):
    df, _ = annotations
    pts = df.iloc[0]["landmarks"]
    pupils = IBUG68.pupils(pts)
    np.testing.assert_allclose(pupils[0], pts[36:42].mean(0), atol=1e-5)
    five = ibug68_to_mtcnn5(pts)
    assert five.shape == (5, 2) and five[0, 0] < five[1, 0]
    assert MTCNN5.flip(five, 100).shape == (5, 2)


def test_bad_scheme_rejected():
    with pytest.raises(ValueError, match="involution"):
        LandmarkScheme("bad", ("a", "b", "c"), (1, 2, 0), (0, 1), ((0,), (1,)))
    with pytest.raises(KeyError, match="ibug68"):
        get_scheme("nope")

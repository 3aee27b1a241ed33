"""Multi-view metrics on a synthetic sequence with known cameras and depth: ground truth scores perfectly,
perturbations give hand-computed values; the RealEstate10K / CO3Dv2 layout readers on files written here."""

from __future__ import annotations

import gzip
import json

import pytest
import torch

from glocal.benchmarks.metrics import multiview as M
from glocal.datasets.multiview import (
    co3d_sequence,
    load_co3d_annotations,
    load_re10k,
    pytorch3d_to_opencv,
    synthetic_sequence,
)
from glocal.datasets.registry import DatasetError
from glocal.zoo.models.vggt import unproject_depth


@pytest.fixture(scope="module")
def seq():
    return synthetic_sequence(frames=4, height=28, width=35, seed=0)


def _world_points(seq) -> torch.Tensor:
    return unproject_depth(seq.depth, seq.extrinsics, seq.intrinsics)


def test_synthetic_sequence_is_consistent(seq) -> None:
    """Every pixel's world point projects back onto itself in its own camera and lies on a scene plane."""
    X = _world_points(seq)
    cam = torch.einsum("sij,shwj->shwi", seq.extrinsics[:, :, :3], X) + seq.extrinsics[:, None, None, :, 3]
    assert torch.allclose(cam[..., 2], seq.depth, atol=1e-9)
    on_plane = ((X[..., 2] - 6).abs() < 1e-6) | ((X[..., 1] - 1.5).abs() < 1e-6) | ((X[..., 0] + 3).abs() < 1e-6)
    assert on_plane.all() and seq.images.shape == (4, 3, 28, 35)


def test_ground_truth_scores_perfectly(seq) -> None:
    pose = M.pose_metrics(seq.extrinsics, seq.extrinsics)
    assert pose["rra5"] == pose["rta5"] == 1.0 and pose["auc30"] == 1.0 and pose["auc3"] == 1.0 and pose["pairs"] == 6
    depth = M.depth_metrics(seq.depth, seq.depth, align="none")
    assert depth["abs_rel"] == 0.0 and depth["delta1"] == 1.0
    X = _world_points(seq)
    pts = M.pointmap_metrics(X, X)
    assert pts["accuracy"] == pts["completeness"] == pts["chamfer"] == 0.0


def test_pose_metrics_ignore_a_similarity_of_the_world(seq) -> None:
    """Relative poses are unchanged by a world rotation, translation and scale (the gauge of the scene)."""
    S = torch.eye(4, dtype=torch.float64)
    S[:3, :3], S[:3, 3] = M.rotation_about("z", 40.0), torch.tensor([1.0, -2.0, 0.5])
    E = torch.cat([seq.extrinsics, torch.tensor([0, 0, 0, 1.0], dtype=torch.float64).expand(4, 1, 4)], dim=1)
    moved = E @ torch.linalg.inv(S)
    moved[:, :3, 3] *= 3.0  # a scaled world
    pose = M.pose_metrics(moved[:, :3], seq.extrinsics)
    assert pose["auc30"] == 1.0 and pose["rra5"] == pose["rta5"] == 1.0


def test_perturbed_pose_gives_hand_computed_values(seq) -> None:
    """Rotate the last camera by 10.5 degrees about its own centre: the 3 pairs with it (it is always the second
    of a pair, T_i T_j^-1) get a 10.5-degree rotation error and no translation error; the other 3 are exact.
    RRA@5 = 0.5, RRA@15 = 1, RTA@5 = 1; AUC@30 = (10 * 0.5 + 20 * 1) / 30; AUC@5 = 0.5."""
    pred = seq.extrinsics.clone()
    P = M.rotation_about("y", 10.5)
    pred[-1] = P @ pred[-1]
    r, t = M.relative_pose_errors(pred, seq.extrinsics)
    assert torch.allclose(r, torch.tensor([0, 0, 10.5, 0, 10.5, 10.5], dtype=torch.float64), atol=1e-4)
    assert t.max() < 1e-4
    pose = M.pose_metrics(pred, seq.extrinsics)
    assert pose["rra5"] == 0.5 and pose["rra15"] == 1.0 and pose["rta5"] == 1.0
    assert pose["auc30"] == pytest.approx(25 / 30) and pose["auc5"] == pytest.approx(0.5)
    assert pose["auc15"] == pytest.approx((10 * 0.5 + 5 * 1.0) / 15)


def test_translation_direction_error_is_hand_computed() -> None:
    """Two cameras 1 apart along x; predicting the second displaced along z by tan(20 deg) gives a 20-degree
    translation error (sign-free) and no rotation error."""
    eye = torch.eye(3, dtype=torch.float64)
    gt = torch.stack([torch.cat([eye, torch.zeros(3, 1, dtype=torch.float64)], 1),
                      torch.cat([eye, torch.tensor([[-1.0], [0], [0]], dtype=torch.float64)], 1)])
    pred = gt.clone()
    pred[1, 2, 3] = -torch.tan(torch.deg2rad(torch.tensor(20.0, dtype=torch.float64)))
    r, t = M.relative_pose_errors(pred, gt)
    assert r.item() < 1e-5 and t.item() == pytest.approx(20.0, abs=1e-6)
    flipped = gt.clone()
    flipped[1, 0, 3] = 1.0  # opposite direction: the metric is sign-free
    assert M.relative_pose_errors(flipped, gt)[1].item() < 1e-5


def test_depth_metrics_hand_computed(seq) -> None:
    gt = seq.depth
    assert M.depth_metrics(1.1 * gt, gt, align="none")["abs_rel"] == pytest.approx(0.1)
    assert M.depth_metrics(3.0 * gt, gt, align="median")["abs_rel"] == pytest.approx(0.0, abs=1e-12)
    assert M.depth_metrics(3.0 * gt, gt, align="scale")["abs_rel"] == pytest.approx(0.0, abs=1e-12)
    assert M.depth_metrics(2.0 * gt + 0.5, gt, align="scale_shift")["abs_rel"] == pytest.approx(0.0, abs=1e-9)
    pred = gt.clone()
    pred[:, :7] *= 1.3  # a quarter of the rows (7 of 28): ratio 1.3 fails delta < 1.25
    out = M.depth_metrics(pred, gt, align="none")
    assert out["delta1"] == pytest.approx(0.75) and out["abs_rel"] == pytest.approx(0.25 * 0.3)
    masked = gt.clone()
    masked[0] = 0  # invalid pixels are ignored
    assert M.depth_metrics(gt, masked, align="none")["pixels"] == 3 * 28 * 35


def test_pointmap_metrics_hand_computed(seq) -> None:
    """A shift of 1 mm is far below the point spacing: every nearest neighbour is the pixel's own point."""
    X = _world_points(seq)[0]
    shift = torch.tensor([0.001, 0, 0], dtype=torch.float64)
    out = M.pointmap_metrics(X + shift, X)
    assert out["accuracy"] == pytest.approx(0.001) and out["completeness"] == pytest.approx(0.001)
    assert out["chamfer"] == pytest.approx(0.001)
    half = M.pointmap_metrics(X[:, :17], X)  # predicting only part of the scene: accurate, incomplete
    assert half["accuracy"] == 0.0 and half["completeness"] > 0.05
    R = M.rotation_about("x", 30.0)
    moved = 2.0 * X @ R.T + torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    aligned = M.pointmap_metrics(moved, X, align="umeyama")
    assert aligned["chamfer"] < 1e-9


def test_bad_metric_input() -> None:
    with pytest.raises(M.MultiviewMetricError, match="no valid"):
        M.depth_metrics(torch.ones(2, 4, 4), torch.zeros(2, 4, 4))
    with pytest.raises(M.MultiviewMetricError, match="at least 2 frames"):
        M.pose_metrics(torch.eye(4)[None, :3], torch.eye(4)[None, :3])
    with pytest.raises(M.MultiviewMetricError, match="alignment"):
        M.depth_metrics(torch.ones(4, 4), torch.ones(4, 4), align="bogus")


def test_re10k_layout_reader(tmp_path) -> None:
    (tmp_path / "test").mkdir()
    rows = ["https://www.youtube.com/watch?v=x"]
    for ts, tx in ((1000, 0.0), (2000, 0.5)):
        pose = [1, 0, 0, tx, 0, 1, 0, 0, 0, 0, 1, 0]
        rows.append(" ".join(str(v) for v in [ts, 0.5, 0.8, 0.5, 0.5, 0, 0, *pose]))
    (tmp_path / "test" / "abc.txt").write_text("\n".join(rows) + "\n")
    seq = load_re10k(tmp_path, "abc", image_hw=(360, 640))
    assert seq.extrinsics.shape == (2, 3, 4) and seq.extrinsics[1, 0, 3] == 0.5
    assert seq.intrinsics[0, 0, 0] == 320 and seq.intrinsics[0, 1, 1] == 288 and seq.intrinsics[0, 1, 2] == 180
    with pytest.raises(DatasetError, match="not extracted"):
        load_re10k(tmp_path, "abc")
    with pytest.raises(DatasetError, match="not found"):
        load_re10k(tmp_path, "missing", image_hw=(1, 1))


def test_co3d_layout_reader(tmp_path) -> None:
    R = M.rotation_about("z", 30.0)
    frames = [{"filepath": "apple/1/images/frame000001.jpg", "R": R.tolist(), "T": [1.0, 2.0, 3.0]}]
    with gzip.open(tmp_path / "apple_test.jgz", "wt") as f:
        json.dump({"1": frames}, f)
    anno = load_co3d_annotations(tmp_path, "apple")
    seq = co3d_sequence("/data/co3d", "1", anno["1"])
    want = pytorch3d_to_opencv(R, torch.tensor([1.0, 2.0, 3.0]))
    assert torch.equal(seq.extrinsics[0], want)
    assert torch.equal(want[:, 3], torch.tensor([-1.0, -2.0, 3.0], dtype=torch.float64))
    flip = torch.diag(torch.tensor([-1.0, -1.0, 1.0], dtype=torch.float64))
    assert torch.allclose(want[:, :3], (R @ flip).T)
    assert seq.paths == ("/data/co3d/apple/1/images/frame000001.jpg",)


def test_re10k_evaluator_end_to_end(tmp_path, seq) -> None:
    """Frames written in the RealEstate10K layout; a stand-in model that predicts the true cameras scores
    AUC@30 = 1 through the evaluator (reading, preprocessing, pose decoding, pairing)."""
    import numpy as np
    from PIL import Image

    from glocal.benchmarks.tasks import DatasetSpec, EvalContext
    from glocal.benchmarks.tasks.multiview import evaluate_re10k
    from glocal.zoo.models.vggt import extri_intri_to_pose_encoding

    (tmp_path / "test").mkdir()
    (tmp_path / "frames" / "syn").mkdir(parents=True)
    K = seq.intrinsics[0]
    rows = ["url"]
    for i in range(4):
        stamp = 1000 * (i + 1)
        pixels = (seq.images[i].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
        Image.fromarray(pixels).save(tmp_path / "frames" / "syn" / f"{stamp}.png")
        norm = [K[0, 0] / 35, K[1, 1] / 28, K[0, 2] / 35, K[1, 2] / 28]
        rows.append(" ".join(str(float(v)) for v in [stamp, *norm, 0, 0, *seq.extrinsics[i].flatten().tolist()]))
    (tmp_path / "test" / "syn.txt").write_text("\n".join(rows))
    truth = extri_intri_to_pose_encoding(seq.extrinsics[None], seq.intrinsics[None], (28, 35))

    class Oracle(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, images):
            assert images.shape == (4, 3, 420, 518)  # width 518, height round(28 * 518 / 35 / 14) * 14 = 420
            return {"pose_enc": truth}

    res = evaluate_re10k(Oracle(), None, None, DatasetSpec.parse(f"re10k={tmp_path},frames=4"),
                         EvalContext(device=torch.device("cpu")))
    assert res.metrics["auc30"] == 1.0 and res.metrics["pairs"] == 6 and res.metrics["rra5"] == 1.0

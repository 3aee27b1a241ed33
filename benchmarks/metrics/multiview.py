"""Multi-view reconstruction metrics: relative camera pose (RRA, RTA, AUC), depth (AbsRel, delta < 1.25) and
point maps (accuracy, completeness, Chamfer).

Pose metrics follow VGGT's CO3D/RealEstate10K evaluation (``evaluation/test_co3d.py``, after PoseDiffusion):
for every frame pair i < j the relative camera-from-world transforms T_i T_j^-1 of prediction and ground truth
are compared; the rotation error is the angle between the relative rotations (through quaternions), the
translation error the angle between the relative translations up to sign (scale-free). RRA@t / RTA@t are the
fractions of pairs under t degrees; AUC@T is the mean over thresholds 1..T degrees of the fraction of pairs whose
larger error lies under the threshold (1-degree histogram, cumulative).

Depth and point metrics follow the MonST3R/CUT3R evaluation: AbsRel = mean |d - d*| / d*, delta < 1.25 = fraction
with max(d/d*, d*/d) < 1.25 over valid pixels (d* > 0) after an optional per-sequence alignment of the prediction
(median scale, least-squares scale, or scale and shift); accuracy = mean distance from each predicted point to the
nearest ground-truth point, completeness = the reverse, Chamfer = their mean (medians reported too).
"""

from __future__ import annotations

import math

import torch


class MultiviewMetricError(ValueError):
    """Inputs the metrics cannot compare (shapes, no valid pixels)."""


# --------------------------------------------------------------------------------------------- poses


def _se3(extrinsics: torch.Tensor) -> torch.Tensor:
    """[N, 3, 4] or [N, 4, 4] camera-from-world -> [N, 4, 4] (float64)."""
    if extrinsics.ndim != 3 or extrinsics.shape[-1] != 4 or extrinsics.shape[-2] not in (3, 4):
        raise MultiviewMetricError(f"extrinsics must be [N, 3, 4] or [N, 4, 4], got {tuple(extrinsics.shape)}")
    e = extrinsics.double()
    if e.shape[-2] == 3:
        bottom = torch.tensor([0, 0, 0, 1], dtype=e.dtype, device=e.device).expand(e.shape[0], 1, 4)
        e = torch.cat([e, bottom], dim=1)
    return e


def _inverse_se3(T: torch.Tensor) -> torch.Tensor:
    R, t = T[:, :3, :3], T[:, :3, 3:]
    out = torch.eye(4, dtype=T.dtype, device=T.device).repeat(T.shape[0], 1, 1)
    out[:, :3, :3] = R.transpose(1, 2)
    out[:, :3, 3:] = -R.transpose(1, 2) @ t
    return out


def rotation_angle_deg(R_gt: torch.Tensor, R_pred: torch.Tensor, eps: float = 1e-15) -> torch.Tensor:
    """Angle (degrees) between rotations, through unit quaternions: arccos(2 <q, q*>^2 - 1)."""
    from glocal.zoo.models.vggt import mat_to_quat

    q, q_gt = mat_to_quat(R_pred), mat_to_quat(R_gt)
    loss = (1 - (q * q_gt).sum(-1) ** 2).clamp(min=eps)
    return torch.rad2deg(torch.arccos(1 - 2 * loss))


def translation_angle_deg(t_gt: torch.Tensor, t_pred: torch.Tensor, eps: float = 1e-15) -> torch.Tensor:
    """Angle (degrees) between translation directions up to sign, min(a, 180 - a); 1e6 rad where undefined."""
    t = t_pred / (t_pred.norm(dim=-1, keepdim=True) + eps)
    g = t_gt / (t_gt.norm(dim=-1, keepdim=True) + eps)
    loss = torch.clamp_min(1.0 - (t * g).sum(-1) ** 2, eps)
    err = torch.acos(torch.sqrt(1 - loss))
    err[torch.isnan(err) | torch.isinf(err)] = 1e6
    deg = torch.rad2deg(err)
    return torch.minimum(deg, (180 - deg).abs())


def relative_pose_errors(pred: torch.Tensor, gt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotation and translation errors (degrees) of all pairs i < j: camera-from-world [N, 3|4, 4] each."""
    P, G = _se3(pred), _se3(gt)
    if P.shape != G.shape or P.shape[0] < 2:
        raise MultiviewMetricError(f"need matching poses of at least 2 frames, got {tuple(pred.shape)} and "
                                   f"{tuple(gt.shape)}")
    i, j = torch.combinations(torch.arange(P.shape[0]), 2).unbind(-1)
    rel_p, rel_g = P[i] @ _inverse_se3(P[j]), G[i] @ _inverse_se3(G[j])
    return (rotation_angle_deg(rel_g[:, :3, :3], rel_p[:, :3, :3]),
            translation_angle_deg(rel_g[:, :3, 3], rel_p[:, :3, 3]))


def pose_auc(r_err: torch.Tensor, t_err: torch.Tensor, max_threshold: int = 30) -> float:
    """Mean over 1-degree bins up to ``max_threshold`` of the cumulative fraction of pairs with max(r, t) in them."""
    err = torch.maximum(r_err, t_err).double()
    hist = torch.stack([((err >= k) & (err < k + 1)).sum() for k in range(max_threshold)]).double()
    hist[-1] += (err == max_threshold).sum()  # numpy.histogram's last bin [T-1, T] is closed
    return float(torch.cumsum(hist / err.numel(), 0).mean())


def pose_metrics(pred: torch.Tensor, gt: torch.Tensor, thresholds: tuple[int, ...] = (5, 15, 30)) -> dict[str, float]:
    """RRA@t, RTA@t (fractions in [0, 1]) and AUC@30/15/5/3 of one sequence's camera-from-world poses."""
    r, t = relative_pose_errors(pred, gt)
    out = {f"rra{th}": float((r < th).double().mean()) for th in thresholds}
    out |= {f"rta{th}": float((t < th).double().mean()) for th in thresholds}
    out |= {f"auc{m}": pose_auc(r, t, m) for m in (30, 15, 5, 3)}
    out["pairs"] = int(r.numel())
    return out


# --------------------------------------------------------------------------------------------- depth


def align_depth(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor, mode: str = "median") -> torch.Tensor:
    """Align a predicted depth sequence to the ground truth over valid pixels: none, median, scale, scale_shift."""
    p, g = pred[mask].double(), gt[mask].double()
    if mode == "none":
        return pred
    if mode == "median":
        return pred * (g.median() / p.median()).to(pred.dtype)
    if mode == "scale":
        return pred * ((p * g).sum() / (p * p).sum()).to(pred.dtype)
    if mode == "scale_shift":
        A = torch.stack([p, torch.ones_like(p)], dim=1)
        s, b = torch.linalg.lstsq(A, g[:, None]).solution[:, 0]
        return pred * s.to(pred.dtype) + b.to(pred.dtype)
    raise MultiviewMetricError(f"unknown depth alignment {mode!r} (none, median, scale, scale_shift)")


def depth_metrics(pred: torch.Tensor, gt: torch.Tensor, align: str = "median", max_depth: float | None = None
                  ) -> dict[str, float]:
    """AbsRel and delta < 1.25 over pixels with gt > 0 (and <= ``max_depth``); shapes [..., H, W] (or [..., 1])."""
    if pred.shape != gt.shape:
        raise MultiviewMetricError(f"depth shapes differ: {tuple(pred.shape)} vs {tuple(gt.shape)}")
    mask = gt > 0
    if max_depth is not None:
        mask &= gt <= max_depth
    if not mask.any():
        raise MultiviewMetricError("no valid ground-truth depth (all <= 0)")
    p = align_depth(pred, gt, mask, align)[mask].double().clamp(min=1e-6)
    g = gt[mask].double()
    ratio = torch.maximum(p / g, g / p)
    return {"abs_rel": float(((p - g).abs() / g).mean()), "delta1": float((ratio < 1.25).double().mean()),
            "pixels": int(mask.sum())}


# --------------------------------------------------------------------------------------------- point maps


def nearest_distances(src: torch.Tensor, dst: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """For each point of src [N, 3], the distance to the nearest point of dst [M, 3] (exact, chunked cdist)."""
    out = [torch.cdist(src[s:s + chunk].double(), dst.double(), compute_mode="donot_use_mm_for_euclid_dist")
           .min(dim=1).values for s in range(0, len(src), chunk)]
    return torch.cat(out) if out else src.new_zeros(0, dtype=torch.float64)


def umeyama(src: torch.Tensor, dst: torch.Tensor, with_scale: bool = True) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Similarity (R, t, s) minimising ||s R src + t - dst||^2 for corresponding points [N, 3]."""
    src, dst = src.double(), dst.double()
    mu_s, mu_d = src.mean(0), dst.mean(0)
    xs, xd = src - mu_s, dst - mu_d
    U, D, Vt = torch.linalg.svd(xd.T @ xs / len(src))
    S = torch.eye(3, dtype=src.dtype)
    if torch.det(U) * torch.det(Vt) < 0:
        S[2, 2] = -1
    R = U @ S @ Vt
    s = float((D * S.diagonal()).sum() / xs.pow(2).sum(1).mean()) if with_scale else 1.0
    return R, mu_d - s * R @ mu_s, s


def pointmap_metrics(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor | None = None,
                     align: str = "none", gt_mask: torch.Tensor | None = None) -> dict[str, float]:
    """Accuracy, completeness and Chamfer distance of point sets [..., 3] (valid where ``mask`` / ``gt_mask``).

    ``mask`` applies to both when the maps share a shape. ``align`` "umeyama" first fits a similarity from
    predicted to ground-truth points (pixel correspondence, same shapes), as the evaluations do before their
    ICP refinement; "none" compares as given."""
    if pred.shape[-1] != 3 or gt.shape[-1] != 3:
        raise MultiviewMetricError(f"point maps must be [..., 3], got {tuple(pred.shape)} and {tuple(gt.shape)}")
    same = pred.shape == gt.shape
    pm = torch.ones(pred.shape[:-1], dtype=torch.bool) if mask is None else mask.bool()
    gm = gt_mask.bool() if gt_mask is not None else (pm if same else torch.ones(gt.shape[:-1], dtype=torch.bool))
    p, g = pred[pm].reshape(-1, 3).double(), gt[gm].reshape(-1, 3).double()
    if len(p) == 0 or len(g) == 0:
        raise MultiviewMetricError("no valid points to compare")
    if align == "umeyama":
        if not same or gt_mask is not None:
            raise MultiviewMetricError("umeyama alignment needs pixel-aligned point maps of one shape")
        R, t, s = umeyama(p, g)
        p = s * p @ R.T + t
    elif align != "none":
        raise MultiviewMetricError(f"unknown point alignment {align!r} (none or umeyama)")
    acc, comp = nearest_distances(p, g), nearest_distances(g, p)
    return {"accuracy": float(acc.mean()), "completeness": float(comp.mean()),
            "chamfer": float((acc.mean() + comp.mean()) / 2), "accuracy_median": float(acc.median()),
            "completeness_median": float(comp.median()), "points": int(len(p))}


def rotation_about(axis: str, degrees: float) -> torch.Tensor:
    """A rotation matrix [3, 3] (float64) about x, y or z."""
    a = math.radians(degrees)
    c, s = math.cos(a), math.sin(a)
    mats = {"x": [[1, 0, 0], [0, c, -s], [0, s, c]], "y": [[c, 0, s], [0, 1, 0], [-s, 0, c]],
            "z": [[c, -s, 0], [s, c, 0], [0, 0, 1]]}
    return torch.tensor(mats[axis], dtype=torch.float64)

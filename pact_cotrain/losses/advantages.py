"""Group-normalised advantages (spec section 1)."""

from __future__ import annotations

import torch


def group_advantages(
    rewards: torch.Tensor,
    group_size: int,
    eps: float = 1e-6,
    normalize_std: bool = True,
) -> torch.Tensor:
    """Group-normalised advantages over the K = ``group_size`` rollouts of each prompt (spec section 1).

        A_i = (R_i - mean_g(R)) / (std_g(R) + eps)        (normalize_std=True)
        A_i =  R_i - mean_g(R)                            (normalize_std=False)

    ``rewards`` is ``[B]`` with ``B = n_groups * group_size``, group-contiguous (rollouts
    ``g*K .. g*K+K-1`` belong to prompt g). ``std_g`` is the *unbiased* (Bessel-corrected,
    ``torch.std`` default) standard deviation, as TRL's GRPOTrainer uses (its ``nanstd``).
    Note TRL's epsilon is 1e-4; the default here is 1e-6.

    Every member of a group whose rewards are all exactly equal gets an advantage of exactly
    0 (not a rounding residue of ``R - mean``), in both modes. ``group_size == 1`` therefore
    gives all zeros (a single rollout has no baseline). Returns a float tensor ``[B]``
    (the rewards' dtype if floating, else the default float dtype).
    """
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D [B], got shape {tuple(rewards.shape)}")
    if group_size < 1 or rewards.shape[0] % group_size != 0:
        raise ValueError(f"{rewards.shape[0]} rewards cannot be split into groups of {group_size}")
    if not rewards.is_floating_point():
        rewards = rewards.to(torch.get_default_dtype())
    grouped = rewards.view(-1, group_size)
    constant = (grouped == grouped[:, :1]).all(dim=1, keepdim=True)
    centred = grouped - grouped.mean(dim=1, keepdim=True)
    if normalize_std and group_size > 1:
        centred = centred / (grouped.std(dim=1, keepdim=True) + eps)
    return torch.where(constant, torch.zeros_like(centred), centred).reshape(-1)

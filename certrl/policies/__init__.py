"""Policy loading: every supported file format becomes one batched, differentiable
:class:`~certrl.policies.base.Policy`.

==============  ===================================================  ==========================
format          files                                                safety
==============  ===================================================  ==========================
``bundle``      certrl ``.json`` manifest + ``.safetensors``         safe (no code)
                (``certrl-mlp``, or ``certrl-cnn`` for pixel policies)
``sb3``         Stable-Baselines3 ``model.save`` zip (+ VecNormalize  safe: JSON + weights-only
                ``.pkl``)                                            tensors; restricted unpickler
``cleanrl``     ``torch.save`` state dict (+ ``--obs-stats`` npz)    safe (``weights_only``)
``torchscript`` ``torch.jit.save`` archive                           runs the file's code: trust
``pickle``      ``torch.save`` of a whole ``nn.Module``              needs ``--unsafe-pickle``
==============  ===================================================  ==========================

Pixel (Atari CNN) policies from SB3 ``CnnPolicy`` zips, CleanRL Atari state dicts,
TorchScript / ONNX modules and ``certrl-cnn`` bundles take flattened ``(4, 84, 84)`` frame stacks
with their ``/ 255`` as the observation normalization (:mod:`certrl.policies.cnn`).

Typical use::

    policy = load_policy("ppo_hopper.zip")            # VecNormalize found beside it
    policy = validate_spaces(policy, env.observation_space, env.action_space, "Hopper-v5")
    actions = policy.act(torch.as_tensor(obs))         # [B, obs_dim] -> [B, act_dim]
"""

from __future__ import annotations

from certrl.policies.base import ObsNormalization, Policy, PolicyError, PolicyInfo
from certrl.policies.bundle import load_bundle, save_bundle
from certrl.policies.loader import (
    FORMATS,
    available_demos,
    detect_format,
    load_policy,
    policy_summary,
)
from certrl.policies.spaces import validate_spaces

__all__ = [
    "FORMATS",
    "ObsNormalization",
    "Policy",
    "PolicyError",
    "PolicyInfo",
    "available_demos",
    "detect_format",
    "load_bundle",
    "load_policy",
    "policy_summary",
    "save_bundle",
    "validate_spaces",
]

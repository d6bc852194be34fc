"""Atari (ALE) environments with the standard DQN preprocessing, as certrl evaluates them.

One Gymnasium environment, :class:`AtariPixels`, reproduces Stable-Baselines3's evaluation
stack ``VecTransposeImage(VecFrameStack(AtariWrapper(env, terminal_on_life_loss=False,
clip_reward=False), 4))`` observation for observation (tested against SB3 in
``tests/test_atari.py``):

=====================  =======================================================================
stage                  what it does (SB3 ``atari_wrappers`` convention)
=====================  =======================================================================
sticky actions         optional (``repeat_action_probability``): SB3's ``StickyActionEnv`` rule,
                       per emulator frame, from the ALE environment's ``np_random``
noop reset             ``1 + U{0..noop_max-1}`` NOOP frames after ``reset`` (``noop_max`` 30),
                       drawn from the same ``np_random`` (seeded by ``reset(seed=...)``)
frame skip             each action is repeated on 4 emulator frames; the reward is their sum;
                       the observation is the pixel-wise max of the last two frames
fire reset             games whose actions include FIRE (Pong) press FIRE then RIGHT after
                       every reset, as SB3's ``FireResetEnv`` does
warp                   RGB -> gray (``cv2.COLOR_RGB2GRAY``), 84 x 84 (``cv2.INTER_AREA``)
frame stack            the last 4 processed frames, channels first: ``(4, 84, 84)`` uint8; at
                       the start of an episode the missing frames are zeros (``VecFrameStack``)
=====================  =======================================================================

Training-only conventions are off: no reward clipping (certificates are on the game score) and
no terminal on life loss (an episode is a game).

The observation the policy sees is the ``(4, 84, 84)`` stack of ``[0, 255]`` pixels; image
policies divide by 255 themselves (SB3 ``preprocess_obs``, CleanRL ``x / 255.0``), and certrl
loads that division as the policy's observation normalization
(:meth:`certrl.policies.base.ObsNormalization.pixels`). So the *normalized* space, where
smoothing noise and attack budgets are measured by default, is ``[0, 1]`` pixels: the unit of
Kumar et al.'s sigma and budgets (their code adds ``sigma * 255`` to ``[0, 255]`` frames) and of
SA-DQN's ``eps = 1/255``.

Variants (``certrl envs`` lists them with their reward bounds):

* ``pong`` — a full game of Pong (first to 21); per-step reward in ``{-1, 0, 1}``, the return
  in ``[-21, 21]``.
* ``pong-one-round`` — Kumar et al.'s one-round Pong: sticky actions
  (``repeat_action_probability=0.25``, their ``PongNoFrameskip-v0``), and the episode ends when
  the first point is scored, with return 1 if the agent scored it and 0 if the opponent did
  (their ``x / 2 + 1 / 2`` win indicator; 0 too if no point falls before the horizon).
* ``freeway`` — a full game of Freeway (2 min 16 s of game time, ~2,050 agent steps); one
  point per crossing.
* ``freeway-250`` — Kumar et al.'s Freeway: the hard difficulty (``difficulty=1``), sticky
  actions (``repeat_action_probability=0.25``), 250 agent steps.

``make_atari(game=..., ...)`` builds any ALE game this way (``--env certrl.atari:make_atari
--env-kwargs '{"game": "breakout", "max_episode_steps": 27000}'``), with unknown reward bounds.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

#: Frames of the standard stack and the processed frame size.
FRAME_STACK = 4
SCREEN = 84
#: ALE's own cap on an episode (SB3 / Gymnasium ``max_num_frames_per_episode``): 108,000 frames,
#: 27,000 agent steps at frame skip 4.
MAX_FRAMES = 108_000


def _require_ale() -> Any:
    try:
        import ale_py
    except ImportError:  # pragma: no cover - depends on the installation
        from certrl.envs import EnvError

        raise EnvError("Atari environments need ale-py and opencv: pip install 'certrl[atari]'"
                       ) from None
    return ale_py


def _cv2() -> Any:
    try:
        import cv2
    except ImportError:  # pragma: no cover - depends on the installation
        from certrl.envs import EnvError

        raise EnvError("Atari environments need opencv: pip install 'certrl[atari]' "
                       "(opencv-python-headless)") from None
    return cv2


class AtariPixels(gym.Env):
    """An ALE game with SB3's evaluation preprocessing (see the module docstring).

    Args:
        game: ALE game name (``"pong"``, ``"freeway"``, ...).
        noop_max: at most this many NOOP frames after reset (0: none).
        frame_skip: emulator frames per action (max-pooled over the last two).
        frame_stack: processed frames per observation.
        repeat_action_probability: ALE sticky actions (0 as in ``*NoFrameskip-v4``).
        difficulty, mode: ALE game difficulty / mode (``None``: the game's default).
        one_round: end the episode at the first point, with reward 1 if the agent scored it and
            0 if the opponent did (Kumar et al.'s one-round Pong).
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        game: str = "pong",
        noop_max: int = 30,
        frame_skip: int = 4,
        frame_stack: int = FRAME_STACK,
        repeat_action_probability: float = 0.0,
        difficulty: int | None = None,
        mode: int | None = None,
        one_round: bool = False,
        max_num_frames_per_episode: int = MAX_FRAMES,
    ) -> None:
        ale_py = _require_ale()
        self._cv2 = _cv2()
        self.game = str(game)
        # ALE's own sticky actions are off: they draw from ALE's generator, which only a ROM
        # reload re-seeds; certrl applies SB3's StickyActionEnv rule itself (_frame)
        self.ale_env = ale_py.env.AtariEnv(
            game=self.game, obs_type="rgb", frameskip=1, repeat_action_probability=0.0,
            full_action_space=False, difficulty=difficulty, mode=mode,
            max_num_frames_per_episode=int(max_num_frames_per_episode),
        )
        self.sticky = float(repeat_action_probability)
        if not 0.0 <= self.sticky < 1.0:
            raise ValueError(f"repeat_action_probability must be in [0, 1), got {self.sticky}")
        self._sticky_action = 0
        self._codes = self.ale_env._action_set
        self._boot = self.ale_env.ale.cloneState()
        self.noop_max = int(noop_max)
        self.frame_skip = int(frame_skip)
        self.n_stack = int(frame_stack)
        self.one_round = bool(one_round)
        meanings = self.ale_env.get_action_meanings()
        self.fire_reset = "FIRE" in meanings and len(meanings) >= 3
        self.action_space = self.ale_env.action_space
        self.observation_space = gym.spaces.Box(
            0, 255, (self.n_stack, SCREEN, SCREEN), dtype=np.uint8)
        shape = self.ale_env.observation_space.shape
        self._buf = np.zeros((2, *shape), dtype=np.uint8)  # MaxAndSkip's persistent buffer
        self._stack = np.zeros((self.n_stack, SCREEN, SCREEN), dtype=np.uint8)

    # --------------------------------------------------------------- the SB3 stages
    def get_action_meanings(self) -> list[str]:
        return list(self.ale_env.get_action_meanings())

    @property
    def ale(self) -> Any:
        """The emulator (RAM, lives, ...)."""
        return self.ale_env.ale

    def _frame(self, action: int) -> float:
        """One emulator frame of ``action``, through SB3's ``StickyActionEnv`` rule: with
        probability ``repeat_action_probability`` the previous frame's action is repeated (one
        ``np_random.random()`` draw per frame, the ALE environment's generator)."""
        if self.sticky > 0.0:
            if self.ale_env.np_random.random() >= self.sticky:
                self._sticky_action = action
            action = self._sticky_action
        return float(self.ale.act(self._codes[action], 1.0))

    def _done(self) -> tuple[bool, bool]:
        ale = self.ale
        return ale.game_over(with_truncation=False), ale.game_truncated()

    def _ale_reset(self, seed: int | None) -> np.ndarray:
        """``AtariEnv.reset(seed=...)`` without its ROM reload (~160 ms; it re-seeds ALE's own
        generator, which nothing here uses: sticky actions are drawn from ``np_random``): the
        generator is seeded exactly as ``AtariEnv.seed_game`` does, the emulator restored to
        its state right after the ROM load (some games, Freeway, keep state across
        ``reset_game``), then the game reset."""
        if seed is not None:
            self.ale_env.seed_game(seed)
        self._sticky_action = 0  # StickyActionEnv.reset: NOOP
        self.ale.restoreState(self._boot)  # the emulator as the ROM load left it
        self.ale.reset_game()
        return self.ale.getScreenRGB()

    def _skip_step(self, action: int) -> tuple[np.ndarray, float, bool, bool]:
        # MaxAndSkipEnv.step: the screen is read only for the two frames that are max-pooled
        ale = self.ale
        total = 0.0
        terminated = truncated = False
        skip = self.frame_skip
        for i in range(skip):
            total += self._frame(action)
            terminated, truncated = self._done()
            if i == skip - 2:
                ale.getScreenRGB(self._buf[0])
            if i == skip - 1:
                ale.getScreenRGB(self._buf[1])
            if terminated or truncated:
                break  # as SB3: the pooled frame may be stale then; an ended episode's is unused
        if skip == 1:
            return self._buf[1].copy(), total, terminated, truncated
        return self._buf.max(axis=0), total, terminated, truncated

    def _noop_reset(self, seed: int | None) -> np.ndarray:
        obs = self._ale_reset(seed)
        if self.noop_max <= 0:
            return obs
        noops = int(self.ale_env.np_random.integers(1, self.noop_max + 1))
        for _ in range(noops):
            self._frame(0)
            te, tr = self._done()
            obs = self.ale.getScreenRGB()
            if te or tr:
                obs = self._ale_reset(seed)
        return obs

    def _fire_reset(self, seed: int | None) -> np.ndarray:
        obs = self._noop_reset(seed)  # MaxAndSkipEnv.reset passes through
        if not self.fire_reset:
            return obs
        obs, _, te, tr = self._skip_step(1)
        if te or tr:
            self._noop_reset(seed)
        obs, _, te, tr = self._skip_step(2)
        if te or tr:
            self._noop_reset(seed)
        return obs

    def _warp(self, frame: np.ndarray) -> np.ndarray:
        cv2 = self._cv2
        gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        return cv2.resize(gray, (SCREEN, SCREEN), interpolation=cv2.INTER_AREA)

    def _push(self, frame: np.ndarray) -> np.ndarray:
        self._stack[:-1] = self._stack[1:]
        self._stack[-1] = frame
        return self._stack.copy()

    # --------------------------------------------------------------- gymnasium API
    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        frame = self._warp(self._fire_reset(seed))
        self._stack[:] = 0
        return self._push(frame), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        frame, reward, terminated, truncated = self._skip_step(int(action))
        if self.one_round and reward != 0:
            # Kumar et al.: the episode is one point, scored as a win indicator (x / 2 + 1 / 2)
            terminated = True
            reward = 1.0 if reward > 0 else 0.0
        return self._push(self._warp(frame)), reward, terminated, truncated, {}

    def close(self) -> None:
        self.ale_env.close()


def make_atari(game: str = "pong", **kwargs: Any) -> AtariPixels:
    """Factory for ``--env certrl.atari:make_atari`` and the registered variants."""
    return AtariPixels(game=game, **kwargs)

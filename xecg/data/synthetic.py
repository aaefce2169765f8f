"""Synthetic CPSC-like 12-lead ECGs whose evidence is known, written as an ordinary store.

Each beat is a sum of Gaussian waves (McSharry et al. 2003) on a 3-D heart vector (x to the
patient's left, y inferior, z anterior); the 12 leads are projections of that vector, so the limb
leads obey Einthoven's law (III = II - I, aVR = -(I + II)/2, ...) and V1..V6 show R-wave
progression. Noise is drawn per electrode (RA, LA, LL, C1..C6) and combined the way an ECG machine
combines them, so it obeys the same lead identities.

Class signatures: AF (irregular RR, no P, 4-9 Hz f-waves strongest in V1/II), I-AVB (PR 220-350
ms), LBBB and RBBB (QRS >= 120 ms with their lead-specific shapes), PAC (premature beats with an
ectopic P), PVC (premature wide QRS without P, discordant T, compensatory pause), STD/STE (ST shift
of 0.15-0.3 mV in one territory, with reciprocal change), Normal (sinus rhythm 60-100 bpm).

Every record lists where its labels show (``Record.evidence``, end exclusive): the whole record for
AF and Normal, P onset to QRS onset per beat for I-AVB, the QRS per conducted beat for LBBB/RBBB,
J point to T peak per conducted beat for STD/STE, and the whole ectopic beat (P or QRS onset to T
end) for PAC/PVC. Ectopic beats recur at least every 5 s, so every 2,880-sample training crop of a
PAC or PVC record holds one.

Record ``i`` depends only on ``(seed, i)`` and the generator options, so a store of 100 records is a
prefix of one of 2,000 with the same seed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from xecg.classes import CLASSES, LEADS, NUM_LEADS, multi_hot
from xecg.data.record import Record
from xecg.data.store import StoreError, StoreWriter, is_current, is_store, reclaim_stale

#: Bump whenever the generated signals or evidence change; part of the store fingerprint. Version 3
#: is v1's hearts and rhythms with ``nuisance="wide"`` (v2 was a rejected branch); ``nuisance="v1"``
#: still makes version 1's records, bit for bit, under version 1's fingerprint.
GENERATOR_VERSION = 3

#: Nuisance levels (:func:`synth_record`): ``"v1"`` (version 1: breathing-rate wander, white noise,
#: sometimes 50 Hz) and ``"wide"`` (version 3: nuisance randomised widely, after Kaisti et al. 2023:
#: wander up to about 1 mV, band-limited EMG in bursts, 50/60 Hz with harmonics, electrode-motion
#: bursts, per-lead gains, random front-end filters, lead-off and saturation; plus more heart-rate
#: variability and beat-to-beat morphology jitter).
NUISANCE_LEVELS = {"v1": 1, "wide": 3}

#: The default nuisance level: "v1", because "wide" did not beat it on the 100 shared real records
#: at equal budget (experiments/sim2real.md, five seeds each: macro AUROC +0.02, micro-F1 -0.02,
#: both within the seed spread).
DEFAULT_NUISANCE = "v1"

#: ``st_variety`` (independent of the nuisance level; off by default): records without STD/STE
#: get a normal J-point elevation (early repolarisation, 0.03-0.2 mV in V2-V3, less in V1 and V4-V6)
#: and T waves of varied size and axis (up to about 1 mV in V2-V3), and STE is a clearer elevation
#: (0.15-0.5 mV from the J point, straight into the T wave, over a territory with reciprocal
#: depression). Timings are untouched, so the evidence is identical with it on or off. Its own
#: random stream leaves every other draw as it was; the fingerprint gains ``st_variety=True``.
DEFAULT_ST_VARIETY = False

#: ``discordant_st`` (independent of the other options; off by default): the secondary ST-T
#: change of beats with abnormal depolarisation, which real records show and version 1 left out.
#: In RBBB the ST segment is shifted against the late rightward-anterior QRS (0.05-0.2 mV at its
#: largest: depressed in V1-V3, slightly raised in I and V5-V6; e.g. Surawicz et al., AHA/ACCF/HRS
#: recommendations part III, 2009); a PVC's ST segment runs from its J point against its QRS
#: (0.1-0.4 mV), into its discordant T. Without it a model learns "ST shift = STD/STE" and calls
#: real RBBB and PVC records STD. Timings are untouched, so the evidence is identical; its own
#: random stream leaves every other draw as it was; the fingerprint gains ``discordant_st=True``.
DEFAULT_DISCORDANT_ST = False

#: Relative size of a normal J-point elevation per precordial lead (V1..V6): chest electrodes see
#: the repolarisation of the wall under them, largest in V2-V3.
_EARLY_REPOL_LEADS = np.array([0.35, 1.0, 1.0, 0.6, 0.3, 0.15])

#: Per-lead gains of the heart-vector projection (``lead_gains``; independent of the other
#: options). ``"v1"``: version 1's hand-set gains. ``"adult"``: the 12 rows scaled so that a
#: normal beat has the QRS amplitudes of normal adults (textbook medians, e.g. Macfarlane &
#: Lawrie, Comprehensive Electrocardiology, 2010): R about 0.65 mV in I and 0.8 mV in II, rS in
#: V1-V2 with S 0.9 and 1.5 mV, R/S transition at V3 (R 1.0, S 1.1 mV), R 1.4 mV in V4, 1.3 in
#: V5, 1.0 in V6. Version 1's precordial QRS is about half that (S 0.6 mV in V2, R 0.8 mV in
#: V4) and its limb leads a little large. The limb rows share one gain, so Einthoven's law
#: holds; ST shifts keep their size in mV (they are scaled to the lead they show most in). The
#: gains stand for the ventricles' nearness to the chest electrodes, so P waves keep version 1's
#: projection (with them, P in V2-V4 reached 0.2-0.25 mV; normal is about 0.1).
LEAD_GAINS: dict[str, np.ndarray] = {
    "v1": np.ones(NUM_LEADS),
    "adult": np.array([0.8] * 6 + [1.5, 2.4, 2.0, 1.8, 1.45, 1.1]),
}
DEFAULT_LEAD_GAINS = "v1"

#: CPSC 2018 label sets with their counts in the official REFERENCE.csv (6,877 records, 476 of
#: them multilabel). AF+PAC (4 records) is left out: a PAC needs sinus rhythm to be premature to.
_CPSC_LABEL_SETS: tuple[tuple[tuple[str, ...], int], ...] = (
    (("RBBB",), 1533), (("AF",), 976), (("Normal",), 918), (("STD",), 784), (("I-AVB",), 686),
    (("PVC",), 607), (("PAC",), 533), (("STE",), 185), (("LBBB",), 179),
    (("AF", "RBBB"), 172), (("PAC", "RBBB"), 52), (("PVC", "RBBB"), 51), (("AF", "STD"), 30),
    (("AF", "LBBB"), 26), (("RBBB", "STD"), 20), (("PVC", "STD"), 18), (("RBBB", "STE"), 16),
    (("I-AVB", "RBBB"), 10), (("LBBB", "PAC"), 10), (("I-AVB", "LBBB"), 8), (("AF", "PVC"), 8),
    (("LBBB", "PVC"), 6), (("PAC", "STD"), 6), (("I-AVB", "STD"), 6), (("I-AVB", "PVC"), 5),
    (("I-AVB", "STE"), 4), (("LBBB", "STE"), 4), (("PAC", "RBBB", "STE"), 3), (("PAC", "PVC"), 3),
    (("I-AVB", "PAC"), 3), (("AF", "LBBB", "STD"), 3), (("AF", "STE"), 2), (("PAC", "STE"), 2),
    (("STD", "STE"), 2), (("PVC", "STE"), 2),
)
_SETS = [s for s, _ in _CPSC_LABEL_SETS]
_SET_P = np.array([c for _, c in _CPSC_LABEL_SETS], dtype=np.float64)
_SET_P /= _SET_P.sum()
assert {c for s in _SETS for c in s} == set(CLASSES), "label table out of step with CLASSES"

#: Label pairs that cannot be simulated together.
_EXCLUSIVE = ({"AF", "I-AVB"}, {"AF", "PAC"}, {"LBBB", "RBBB"})

#: An ectopic beat is forced once the next beat would come this long (s) after the last ectopic
#: beat of its class; with the coupling interval (and, when PAC and PVC are both due, one more
#: beat) ectopic beats of a class stay under about 5.5 s apart, and the gaps between their
#: evidence spans under the 5.76 s of a 2,880-sample training crop.
_MAX_ECTOPIC_GAP_S = 3.0

_SINUS, _PAC, _PVC = 0, 1, 2


# --------------------------------------------------------------------------------------------
# Geometry: lead and electrode matrices.

def _unit(*v: float) -> np.ndarray:
    a = np.array(v, dtype=np.float64)
    return a / np.linalg.norm(a)


def _lead_matrix() -> np.ndarray:
    """``12 x 3``: each lead's voltage is its row dotted with the heart vector."""
    i = np.array([1.0, 0.0, 0.0])
    ii = np.array([0.5, np.sqrt(3) / 2, 0.0])
    limb = [i, ii, ii - i, -(i + ii) / 2, i - ii / 2, ii - i / 2]
    # (angle from the left toward the front in the horizontal plane, gain); precordial electrodes
    # sit close to the heart, hence gains above 1, largest over the anterior wall.
    chest = [(120, 1.0), (95, 1.5), (75, 1.6), (55, 1.6), (30, 1.35), (0, 1.1)]
    prec = [g * np.array([np.cos(np.radians(a)), 0.0, np.sin(np.radians(a))]) for a, g in chest]
    return np.array(limb + prec)


def _electrode_matrix() -> np.ndarray:
    """``12 x 9``: leads from electrode potentials RA, LA, LL, C1..C6 (Wilson terminal)."""
    m = np.zeros((NUM_LEADS, 9))
    ra, la, ll = np.eye(9)[:3]
    m[:6] = [la - ra, ll - ra, ll - la, ra - (la + ll) / 2, la - (ra + ll) / 2, ll - (ra + la) / 2]
    m[6:, 3:] = np.eye(6)
    m[6:, :3] = -1.0 / 3.0
    return m


_LEAD = _lead_matrix()
_ELECTRODE = _electrode_matrix()
assert len(LEADS) == _LEAD.shape[0] == _ELECTRODE.shape[0]


# --------------------------------------------------------------------------------------------
# Beat templates: Gaussian waves on the heart vector.

class _Waves(NamedTuple):
    """K Gaussian waves of one beat part, timed from an anchor (QRS onset, or P onset for P)."""

    at: np.ndarray     # (K,) centre, s after the anchor
    qt: np.ndarray     # (K,) fraction of the beat's QT added to ``at`` (1 for T waves)
    width: np.ndarray  # (K,) Gaussian sigma, s
    vec: np.ndarray    # (K, 3) heart-vector amplitude, mV

    @staticmethod
    def of(rows: Sequence[tuple[float, float, float, np.ndarray]]) -> _Waves:
        if not rows:
            return _Waves(np.zeros(0), np.zeros(0), np.zeros(0), np.zeros((0, 3)))
        at, qt, width, vec = zip(*rows)
        return _Waves(np.array(at), np.array(qt), np.array(width), np.array(vec))

    def __add__(self, other: _Waves) -> _Waves:  # type: ignore[override]
        return _Waves(*(np.concatenate([a, b]) for a, b in zip(self, other)))

    def scaled(self, k: float) -> _Waves:
        return self._replace(vec=self.vec * k)

    @property
    def end(self) -> float:
        """Where the last (non-QT) wave has died away: the J point for a QRS."""
        return float(np.max(self.at + 2.5 * self.width))


class _Beat(NamedTuple):
    """Ventricular part of one beat kind: QRS + ST-T, and its QT lengthening."""

    qrs: _Waves
    st_t: _Waves
    qt_extra: float


def _t_waves(direction: np.ndarray, amp: float) -> _Waves:
    """Asymmetric T (slow rise, faster fall), peaking 75 ms before the beat's QT ends."""
    return _Waves.of([(-0.110, 1.0, 0.045, 0.45 * amp * direction),
                      (-0.075, 1.0, 0.030, 0.60 * amp * direction)])


def _st_waves(j: float, vec: np.ndarray) -> _Waves:
    """A plateau of ``vec`` from the J point into the T wave (three overlapping Gaussians)."""
    return _Waves.of([(j + d, 0.0, 0.025, vec * a / 1.5) for d, a in
                      ((0.02, 1.0), (0.06, 1.0), (0.10, 0.85))])


def _qrs(conduction: str, w: float) -> _Waves:
    """QRS for normal, LBBB or RBBB conduction; ``w`` scales its duration."""
    q = (0.012 * w, 0.0, 0.006 * w, 0.20 * _unit(-0.55, 0.25, 0.8))      # septum, left to right
    r1 = (0.032 * w, 0.0, 0.009 * w, 0.80 * _unit(0.45, 0.75, 0.5))      # apex, anterior
    r2 = (0.046 * w, 0.0, 0.010 * w, 1.10 * _unit(0.85, 0.35, -0.45))    # left free wall
    s = (0.066 * w, 0.0, 0.008 * w, 0.40 * _unit(-0.35, -0.55, -0.75))   # base
    if conduction == "LBBB":
        # Septum activated from the right: no septal q, then slow leftward-posterior spread with a
        # notch (broad notched R in I, aVL, V5-V6; QS in V1-V2).
        return _Waves.of([
            (0.020 * w, 0.0, 0.012 * w, 0.55 * _unit(0.7, 0.2, -0.3)),
            (0.058 * w, 0.0, 0.017 * w, 1.40 * _unit(0.9, 0.15, -0.5)),
            (0.100 * w, 0.0, 0.017 * w, 1.30 * _unit(0.85, -0.05, -0.55)),
        ])
    if conduction == "RBBB":
        # Normal left-ventricular start, then late slow right-ventricular activation pointing
        # right and anterior: R' in V1-V2, wide slurred S in I, V5-V6. The basal S keeps the
        # loop turning (right, then anterior) instead of collapsing through zero.
        late = (0.100 * w, 0.0, 0.018 * w, 0.95 * _unit(-0.7, -0.15, 0.7))
        return _Waves.of([q, r1, r2, s, late])
    return _Waves.of([q, r1, r2, s])


class _Heart:
    """One record's anatomy: wave shapes, axis, amplitudes and timings."""

    def __init__(self, rng: np.random.Generator, labels: set[str],
                 st: np.random.Generator | None = None, lead: np.ndarray = _LEAD,
                 secondary: np.random.Generator | None = None):
        # 12 x 3 projections of this record (``lead_gains``): the ventricles', and the atria's,
        # which keep version 1's gains (see LEAD_GAINS).
        self.lead = lead
        self.p_lead = _LEAD
        # Rotation of every wave: frontal axis (about z) and precordial transition (about y).
        a = np.clip(rng.normal(0.0, 0.35), -0.7, 0.7)
        b = np.clip(rng.normal(0.0, 0.2), -0.4, 0.4)
        rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
        ry = np.array([[np.cos(b), 0, -np.sin(b)], [0, 1, 0], [np.sin(b), 0, np.cos(b)]])
        self._rot = rz @ ry
        self._rng = rng
        amp = rng.uniform(0.5, 1.15)
        w = rng.uniform(0.9, 1.12)
        conduction = "LBBB" if "LBBB" in labels else "RBBB" if "RBBB" in labels else "normal"
        qrs = self._vary(_qrs(conduction, w)).scaled(amp)
        t_dir = {"normal": _unit(0.65, 0.6, 0.25), "RBBB": _unit(0.7, 0.5, -0.3),
                 "LBBB": _unit(-0.7, -0.1, 0.65)}[conduction]
        t_amp = rng.uniform(0.25, 0.5) * (1.3 if conduction == "LBBB" else 1.0)
        if st is not None:
            # Normal T waves vary in size and point more or less forward: upright in I, II and
            # V2-V6 throughout, from flat-ish to about 1 mV in V2-V3.
            t_amp *= st.uniform(0.8, 1.8) if conduction == "normal" else st.uniform(0.8, 1.3)
            if conduction == "normal":
                t_dir = _unit(0.65, st.uniform(0.35, 0.75), st.uniform(0.15, 1.1))
        st_t = self._vary(_t_waves(t_dir, t_amp))
        if conduction == "LBBB":  # discordant ST in LBBB
            st_t += self._vary(_st_waves(qrs.end, 0.12 * t_dir))
        if conduction == "RBBB" and secondary is not None:
            # Secondary ST shift against the late rightward-anterior activation (``discordant_st``).
            late = _unit(-0.7, -0.15, 0.7) @ self._rot.T
            st_t += _st_waves(qrs.end, self._largest_at(-late, secondary.uniform(0.05, 0.2)))
        st_t += self._injury(rng, labels, qrs.end, st)
        self.conducted = _Beat(qrs, st_t, qrs.end - 0.09)
        # Normal J-point elevation (``st``, records without an ST label): a plateau from the J
        # point into the T wave in the precordial leads, rendered per lead (``early_repol_leads``).
        self.early_repol: _Waves | None = None
        self.early_repol_leads = np.zeros(NUM_LEADS)
        if st is not None and not labels & {"STD", "STE"} and conduction != "LBBB":
            mv = st.uniform(0.03, 0.2)
            self.early_repol = _Waves.of([(qrs.end + d, 0.0, 0.02, np.array([mv * a / 1.25, 0, 0]))
                                          for d, a in ((0.01, 1.0), (0.05, 0.9), (0.09, 0.7))])
            self.early_repol_leads[6:] = _EARLY_REPOL_LEADS * st.uniform(0.8, 1.2, size=6)

        self.p = self._vary(_Waves.of([
            (0.035, 0.0, 0.014, 0.12 * _unit(0.3, 0.8, 0.5)),     # right atrium
            (0.060, 0.0, 0.016, 0.11 * _unit(0.8, 0.45, -0.45)),  # left atrium
        ])).scaled(rng.uniform(0.8, 1.4))
        self.pr = rng.uniform(0.22, 0.35) if "I-AVB" in labels else rng.uniform(0.12, 0.19)
        self.qtc = rng.uniform(0.38, 0.44)

        # Ectopic atrial focus: a P pointing away from the sinus P (inverted in some leads).
        sinus_p = self.p.vec.sum(0)
        focus = _unit(*rng.normal(size=3))
        focus = focus - 1.2 * max(focus @ sinus_p / (sinus_p @ sinus_p), 0.0) * sinus_p
        self.p_ectopic = _Waves.of([(0.05, 0.0, rng.uniform(0.018, 0.024),
                                     rng.uniform(0.1, 0.16) * _unit(*focus))])
        # Ventricular focus: wide bizarre QRS, T opposite to it.
        d1 = _unit(*rng.normal(size=3))
        d2 = _unit(*(d1 + 0.6 * rng.normal(size=3)))
        pvc_amp = amp * rng.uniform(1.4, 2.2)  # ectopic beats are larger than sinus ones
        pvc_qrs = _Waves.of([(0.035, 0.0, 0.020, 0.7 * pvc_amp * d1),
                             (0.085, 0.0, 0.022, pvc_amp * d2)])
        pvc_t = _t_waves(-_unit(*(d1 + d2)), rng.uniform(0.35, 0.6))
        if secondary is not None:  # ST from the J point against the QRS (``discordant_st``)
            pvc_t += _st_waves(pvc_qrs.end, self._largest_at(-_unit(*(d1 + d2)),
                                                              secondary.uniform(0.1, 0.4)))
        self.pvc = _Beat(pvc_qrs, pvc_t, 0.06)
        self.coupling = {_PAC: rng.uniform(0.6, 0.78), _PVC: rng.uniform(0.55, 0.72)}

    def _vary(self, waves: _Waves) -> _Waves:
        """Per-record jitter of each wave's direction and size, then the record's rotation."""
        n = len(waves.at)
        size = np.linalg.norm(waves.vec, axis=1, keepdims=True)
        vec = waves.vec + 0.12 * size * self._rng.normal(size=(n, 3))
        vec *= self._rng.uniform(0.85, 1.18, size=(n, 1))
        return waves._replace(vec=vec @ self._rot.T)

    def _injury(self, rng: np.random.Generator, labels: set[str], j: float,
                st: np.random.Generator | None = None) -> _Waves:
        """ST shift for STD/STE: a current of injury toward (STE) or away from (STD) a territory.

        ``st`` (``st_variety``): STE is 0.15-0.5 mV, starts at the J point and runs straight into
        the T wave, and an anterior injury points a little upward (reciprocal depression in II,
        III, aVF)."""
        territories = {  # heart-vector direction of each wall
            "inferior": _unit(0.05, 1.0, 0.1), "anterior": _unit(-0.1, 0.0, 1.0),
            "lateral": _unit(0.9, -0.3, 0.3), "subendocardial": _unit(0.6, 0.55, 0.5),
        }
        waves = _Waves.of([])
        ste = None
        if "STE" in labels:
            wall = rng.choice(["inferior", "anterior", "lateral"])
            ste = territories[wall]
            mv = rng.uniform(0.15, 0.3)
            if st is None:
                waves += _st_waves(j, self._scaled_to_leads(ste, mv))
            else:
                mv = st.uniform(0.15, 0.5)
                vec = territories[wall] if wall != "anterior" else _unit(-0.1, -0.4, 1.0)
                vec = self._scaled_to_leads(vec, mv)
                # J point, plateau, and a rise into the T wave: straight or convex, not concave.
                waves += _Waves.of([(j + d, 0.0, 0.022, vec * a / 1.5) for d, a in
                                    ((0.005, 0.9), (0.04, 1.0), (0.08, 1.05), (0.12, 0.9))])
        if "STD" in labels:
            # Depression in the leads that face the wall; with STE, never just its mirror image.
            names = [k for k in ("subendocardial", "anterior", "inferior", "lateral")
                     if ste is None or territories[k] @ ste < 0.3]
            d = territories[rng.choice(names)]
            waves += _st_waves(j, -self._scaled_to_leads(d, rng.uniform(0.15, 0.3)))
        return waves

    def _scaled_to_leads(self, direction: np.ndarray, mv: float) -> np.ndarray:
        """``direction`` scaled so that the lead it shows most in moves by ``mv``."""
        return direction * mv / np.max(self.lead @ direction)

    def _largest_at(self, direction: np.ndarray, mv: float) -> np.ndarray:
        """``direction`` scaled so that its largest shift in any lead, up or down, is ``mv``."""
        return direction * mv / np.max(np.abs(self.lead @ direction))


# --------------------------------------------------------------------------------------------
# Rhythm.

class _Rhythm(NamedTuple):
    onset: np.ndarray  # (B,) QRS onsets, s (some before 0 or after the end: they draw into it)
    kind: np.ndarray   # (B,) _SINUS, _PAC or _PVC
    rr: np.ndarray     # (B,) interval from the previous onset, s


def _rhythm(rng: np.random.Generator, heart: _Heart, labels: set[str], duration: float,
            hrv: np.random.Generator | None = None) -> _Rhythm:
    """Beat times: sinus (with respiratory arrhythmia) or AF, with PAC/PVC interleaved.

    ``hrv`` (nuisance ``"wide"``): a generator for wider sinus heart-rate variability (stronger
    respiratory arrhythmia, a slow 0.04-0.15 Hz swing, more beat-to-beat noise)."""
    af = "AF" in labels
    hr = (rng.uniform(65, 115) if af else rng.uniform(60, 100) if "Normal" in labels
          else rng.uniform(50, 90) if "I-AVB" in labels else rng.uniform(50, 110))
    rr0 = 60.0 / hr
    af_sd = rng.uniform(0.15, 0.3)
    resp_f, resp_a, resp_ph = rng.uniform(0.15, 0.35), rng.uniform(0.01, 0.04), rng.uniform(0, 7)
    ectopic = {k: rng.uniform(0.08, 0.3) for k, name in ((_PAC, "PAC"), (_PVC, "PVC"))
               if name in labels}
    last = dict.fromkeys(ectopic, 0.0)  # the record start counts as an ectopic beat

    lf_f = lf_a = lf_ph = 0.0
    white = 0.01
    if hrv is not None:
        resp_a = hrv.uniform(0.005, 0.05)
        lf_f, lf_a, lf_ph = hrv.uniform(0.04, 0.15), hrv.uniform(0.0, 0.025), hrv.uniform(0, 7)
        white = hrv.uniform(0.004, 0.015)

    def next_rr(t: float) -> float:
        if af:
            return float(np.clip(rr0 * np.exp(af_sd * rng.normal() - af_sd**2 / 2), 0.33, 1.6))
        if hrv is None:  # version 1, to the last bit
            return rr0 * (1 + resp_a * np.sin(2 * np.pi * resp_f * t + resp_ph)
                          + white * rng.normal())
        return rr0 * (1 + resp_a * np.sin(2 * np.pi * resp_f * t + resp_ph)
                      + lf_a * np.sin(2 * np.pi * lf_f * t + lf_ph) + white * hrv.normal())

    t = -rng.uniform(1.0, 1.0 + rr0)
    onsets, kinds = [t], [_SINUS]
    pending = None  # after a PVC in sinus rhythm: when the next sinus beat is due
    while t < duration + 0.6:
        rr = next_rr(t)
        due = [k for k in ectopic if t + rr - last[k] > _MAX_ECTOPIC_GAP_S]
        wanted = due or ([k for k, p in ectopic.items() if rng.random() < p]
                         if kinds[-1] == _SINUS else [])
        if wanted:
            kind = min(wanted, key=last.__getitem__)  # the longest-waiting class first
            nxt = t + rr * (heart.coupling[kind] + rng.uniform(-0.03, 0.03))
            last[kind] = nxt
            # Full compensatory pause after a PVC: the sinus node was not reset.
            pending = t + 2 * rr if kind == _PVC and not af else None
        else:
            kind = _SINUS
            nxt = pending if pending is not None else t + rr
            pending = None
        onsets.append(nxt)
        kinds.append(kind)
        t = nxt
    onset = np.array(onsets)
    rr = np.diff(onset, prepend=onset[0] - rr0)
    return _Rhythm(onset, np.array(kinds), rr)


# --------------------------------------------------------------------------------------------
# Rendering.

def _place(waves: _Waves, anchor: np.ndarray, qt: np.ndarray, jitter: np.ndarray,
           morph: np.random.Generator | None = None
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centres (B*K,), widths (B*K,), vectors (B*K, 3) of ``waves`` at B anchors (s).

    ``morph``: each wave of each beat also varies a little in size (6%); the timings, hence the
    evidence, are untouched."""
    at = anchor[:, None] + waves.at[None] + waves.qt[None] * qt[:, None]
    width = np.broadcast_to(waves.width, at.shape)
    vec = waves.vec[None] * jitter[:, None, None]
    if morph is not None and vec.size:
        vec = vec * (1 + 0.06 * morph.standard_normal(at.shape + (1,)))
    return at.ravel(), width.ravel(), vec.reshape(-1, 3)


def _render(at: np.ndarray, width: np.ndarray, vec: np.ndarray, fs: float, n: int) -> np.ndarray:
    """Heart vector ``3 x n``: the sum of Gaussians centred at ``at`` s, sigma ``width`` s.

    Each Gaussian is evaluated only within 4 sigma of its centre (a ragged set of windows).
    """
    c, s = at * fs, width * fs
    half = np.ceil(4 * s).astype(np.int64)
    size = 2 * half + 1
    first = np.rint(c).astype(np.int64) - half
    which = np.repeat(np.arange(len(c)), size)
    idx = first[which] + np.arange(size.sum()) - np.repeat(np.cumsum(size) - size, size)
    g = np.exp(-0.5 * ((idx - c[which]) / s[which]) ** 2)
    keep = (idx >= 0) & (idx < n)
    idx, g, which = idx[keep], g[keep], which[keep]
    return np.stack([np.bincount(idx, weights=g * vec[which, d], minlength=n) for d in range(3)])


def _f_lead_weights() -> np.ndarray:
    """(12,) size of f-waves per lead relative to V1: the atria lie right, inferior and anterior,
    so limb leads see a rightward-inferior dipole (largest in II, III, aVF) and the precordial
    leads fade with distance from V1."""
    limb = _LEAD[:6] @ _unit(-0.4, 0.8, 0.4)
    return np.concatenate([0.6 * limb / limb[LEADS.index("II")],
                           [1.0, 0.6, 0.4, 0.3, 0.2, 0.15]])


_F_WEIGHTS = _f_lead_weights()


def _slow_wobble(rng: np.random.Generator, t: np.ndarray, k: int = 3) -> np.ndarray:
    """Sum of ``k`` random sinusoids of 0.05-1 Hz, scaled to about unit amplitude."""
    f = rng.uniform(0.05, 1.0, size=(k, 1))
    return np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi, size=(k, 1))).sum(0) / np.sqrt(k)


def _f_waves(rng: np.random.Generator, t: np.ndarray, fs: float) -> np.ndarray:
    """Fibrillatory waves ``12 x n`` (mV): 4-9 Hz, wandering in rate and size, largest in V1."""
    freq = np.clip(rng.uniform(4.5, 8.0) + 0.8 * _slow_wobble(rng, t), 4.0, 9.0)
    phase = 2 * np.pi * np.cumsum(freq) / fs
    size = rng.uniform(0.04, 0.12) * np.clip(1 + 0.4 * _slow_wobble(rng, t), 0.2, None)
    wave = size * (np.sin(phase) + 0.3 * np.sin(2 * phase + rng.uniform(0, 2 * np.pi)))
    return np.outer(_F_WEIGHTS, wave)


def _noise(rng: np.random.Generator, t: np.ndarray) -> np.ndarray:
    """Per-electrode baseline wander, white (EMG-like) noise and sometimes 50 Hz, as ``12 x n``."""
    n = len(t)
    # Two breathing-rate sinusoids shared by all electrodes, each with its own size and phase:
    # a sin(wt + p) = a cos(p) sin(wt) + a sin(p) cos(wt).
    wt = 2 * np.pi * rng.uniform(0.1, 0.5, size=(2, 1)) * t
    amps = rng.uniform(0.03, 0.3) * rng.uniform(0, 1, size=(9, 2))
    phases = rng.uniform(0, 2 * np.pi, size=(9, 2))
    wander = (np.einsum("ek,kn->en", amps * np.cos(phases), np.sin(wt))
              + np.einsum("ek,kn->en", amps * np.sin(phases), np.cos(wt)))
    electrodes = wander + rng.uniform(0.004, 0.025) * rng.standard_normal((9, n), np.float32)
    if rng.random() < 0.3:
        hum = rng.uniform(0.005, 0.02) * rng.uniform(0.5, 1.0, size=(9, 1))
        electrodes += hum * np.sin(2 * np.pi * 50.0 * t + rng.uniform(0, 2 * np.pi))
    return _project(_ELECTRODE, electrodes)


# Measured leads of an ECG front end: I, II and V1..V6; III, aVR, aVL, aVF are computed from I and
# II, so per-lead gains, filters, saturation and lead-off keep Einthoven's law.
_MEASURED = [LEADS.index(x) for x in ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")]
_DERIVED = _LEAD[:6, :2] @ np.linalg.inv(_LEAD[:2, :2])  # 6 x 2: limb leads from I and II


def _loguniform(rng: np.random.Generator, lo: float, hi: float, size=None):
    return np.exp(rng.uniform(np.log(lo), np.log(hi), size=size))


def _band_noise(rng: np.random.Generator, shape: tuple[int, int], fs: float, lo: float, hi: float
                ) -> np.ndarray:
    """White noise band-limited to ``lo``-``hi`` Hz (FFT mask), unit standard deviation."""
    n = shape[1]
    spec = np.fft.rfft(rng.standard_normal(shape), axis=1)
    f = np.fft.rfftfreq(n, 1 / fs)
    spec[:, (f < lo) | (f > hi)] = 0
    x = np.fft.irfft(spec, n=n, axis=1)
    return x / np.maximum(x.std(axis=1, keepdims=True), 1e-12)


def _bursts(rng: np.random.Generator, n: int, fs: float, count: int, lo_s: float, hi_s: float
            ) -> np.ndarray:
    """(n,) envelope in [0, 1]: ``count`` smooth (Hann) bursts of ``lo_s``-``hi_s`` seconds."""
    env = np.zeros(n)
    for _ in range(count):
        m = max(int(rng.uniform(lo_s, hi_s) * fs), 4)
        a = int(rng.integers(-m // 2, n))
        w = np.hanning(m)
        lo, hi = max(a, 0), min(a + m, n)
        if hi > lo:
            env[lo:hi] = np.maximum(env[lo:hi], w[lo - a:hi - a])
    return env


def _wide_noise(rng: np.random.Generator, t: np.ndarray, fs: float) -> np.ndarray:
    """Per-electrode nuisance ``12 x n`` (mV) at the ``"wide"`` level: baseline wander (0.05-0.5
    Hz, up to about 1 mV), band-limited EMG varying per electrode and in bursts, 50/60 Hz mains
    with harmonics, and electrode-motion bursts."""
    n = len(t)
    # Baseline wander: a few sinusoids of 0.05-0.5 Hz per electrode (breathing shared), log-uniform
    # size so that most records wander a little and some by up to about 1 mV.
    k = 3
    f = _loguniform(rng, 0.05, 0.5, size=(1, k, 1))
    size = _loguniform(rng, 0.01, 0.5) * rng.uniform(0, 1, size=(9, k, 1))
    ph = rng.uniform(0, 2 * np.pi, size=(9, k, 1))
    electrodes = (size * np.sin(2 * np.pi * f * t + ph)).sum(1)
    # EMG: band-limited noise (lower edge 5-30 Hz, upper 60-200 Hz), per-electrode size, with
    # bursts (muscle tension) in some records.
    emg = _band_noise(rng, (9, n), fs, rng.uniform(5, 30), min(rng.uniform(60, 200), fs / 2))
    level = _loguniform(rng, 0.002, 0.05) * _loguniform(rng, 0.3, 3.0, size=(9, 1))
    env = 1.0
    if rng.random() < 0.4:
        env = 1 + _loguniform(rng, 2, 10) * _bursts(rng, n, fs, int(rng.integers(1, 5)), 0.3, 2.5)
    electrodes += level * env * emg
    # Mains: 50 or 60 Hz with harmonics, per-electrode size.
    if rng.random() < 0.5:
        f0 = 50.0 if rng.random() < 0.7 else 60.0
        amp = _loguniform(rng, 0.003, 0.1) * rng.uniform(0.2, 1.0, size=(9, 1))
        for h, rel in ((1, 1.0), (2, rng.uniform(0, 0.3)), (3, rng.uniform(0, 0.4))):
            if h * f0 < fs / 2:
                electrodes += rel * amp * np.sin(2 * np.pi * h * f0 * t + rng.uniform(0, 2 * np.pi))
    # Electrode motion: slow bumps (1-8 Hz content) of 0.1-1.5 mV at one or two electrodes.
    if rng.random() < 0.3:
        for _ in range(int(rng.integers(1, 4))):
            e = rng.choice(9, size=int(rng.integers(1, 3)), replace=False)
            bump = _band_noise(rng, (1, n), fs, 0.3, rng.uniform(2, 8))[0]
            env = _bursts(rng, n, fs, 1, 0.2, 1.5)
            electrodes[e] += _loguniform(rng, 0.1, 1.5) * env * bump
    return _project(_ELECTRODE, electrodes)


def _front_end(rng: np.random.Generator, x: np.ndarray, fs: float) -> np.ndarray:
    """What a recorder does to the ``12 x n`` lead signals (mV) at the ``"wide"`` level: global and
    per-lead gain, a random zero-phase band-pass (high-pass 0.05-0.7 Hz, low-pass 35-150 Hz),
    sometimes saturation or a flat (lead-off) stretch; then III, aVR, aVL and aVF from I and II."""
    from scipy.signal import butter, sosfiltfilt

    n = x.shape[1]
    m = x[_MEASURED].astype(np.float64)
    gain = _loguniform(rng, 0.6, 1.6) * np.clip(np.exp(0.25 * rng.standard_normal((8, 1))),
                                                0.5, 2.0)
    m *= gain
    hp, lp = _loguniform(rng, 0.05, 0.7), rng.uniform(35.0, min(150.0, 0.45 * fs))
    order = int(rng.integers(1, 3))
    m = sosfiltfilt(butter(order, [hp, lp], btype="band", fs=fs, output="sos"), m, axis=1)
    if rng.random() < 0.1:  # the amplifier's range ends at a few mV
        rail = rng.uniform(1.5, 4.0)
        m = np.clip(m, -rail, rail)
    if rng.random() < 0.08:  # a precordial electrode comes off for a while: a flat, quiet lead
        lead = int(rng.integers(2, 8))
        a = int(rng.integers(0, n))
        b = min(n, a + int(rng.uniform(0.5, 5.0) * fs))
        m[lead, a:b] = 0.002 * rng.standard_normal(b - a)
    out = np.empty_like(x, dtype=np.float64)
    out[_MEASURED] = m
    out[:6] = _project(_DERIVED, m[:2])
    return out


def _project(matrix: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``matrix @ x`` for a small matrix; einsum avoids BLAS threads, which cost more than they
    save on such shapes (and fight over a busy machine's cores)."""
    return np.einsum("lk,kn->ln", matrix, x)


class _Spans(NamedTuple):
    """Per-beat sample intervals used to write the evidence."""

    beats: np.ndarray  # kind of each beat
    p_on: np.ndarray
    qrs_on: np.ndarray
    j: np.ndarray
    t_peak: np.ndarray
    t_end: np.ndarray


def _draw(rng: np.random.Generator, heart: _Heart, rhythm: _Rhythm, labels: set[str], fs: float,
          n: int, morph: np.random.Generator | None = None) -> tuple[np.ndarray, _Spans]:
    """Noise-free cardiac signal ``12 x n`` (mV) and the per-beat fiducials (s); ``morph``: a
    generator for beat-to-beat morphology jitter (see :func:`_place`)."""
    onset, kind, rr = rhythm
    qt = heart.qtc * np.sqrt(np.clip(rr, 0.3, 2.0))
    jitter = 1.0 + 0.03 * rng.normal(size=len(onset))
    pr = heart.pr + 0.005 * rng.normal(size=len(onset)) + np.where(kind == _PAC, 0.02, 0.0)
    p_on = np.where(kind == _PVC, np.nan, onset - pr)
    j = np.empty_like(onset)
    t_end = np.empty_like(onset)
    parts = []
    for beat, sel in ((heart.conducted, kind != _PVC), (heart.pvc, kind == _PVC)):
        q = qt[sel] + beat.qt_extra
        parts.append(_place(beat.qrs + beat.st_t, onset[sel], q, jitter[sel], morph))
        j[sel] = onset[sel] + beat.qrs.end
        t_end[sel] = onset[sel] + q
    has_p = (kind == _PAC) | ((kind == _SINUS) & ("AF" not in labels))
    atrial = [_place(p, p_on[sel], np.zeros(sel.sum()), jitter[sel], morph)
              for p, sel in ((heart.p, has_p & (kind == _SINUS)), (heart.p_ectopic, kind == _PAC))]
    same = heart.p_lead is heart.lead  # version 1: one projection, rendered in one pass
    at, width, vec = (np.concatenate(x) for x in zip(*(parts + atrial if same else parts)))
    signal = _project(heart.lead, _render(at, width, vec, fs, n))
    if not same:
        at, width, vec = (np.concatenate(x) for x in zip(*atrial))
        signal += _project(heart.p_lead, _render(at, width, vec, fs, n))
    if heart.early_repol is not None:  # per-lead (precordial) J-point elevation, conducted beats
        sel = kind != _PVC
        at, width, vec = _place(heart.early_repol, onset[sel], qt[sel], jitter[sel])
        signal += np.outer(heart.early_repol_leads, _render(at, width, vec, fs, n)[0])
    p_on[~has_p] = np.nan
    return signal, _Spans(kind, p_on, onset, j, t_end - 0.075, t_end)


def _evidence(labels: set[str], spans: _Spans, fs: float, n: int) -> list[tuple[str, int, int]]:
    """``(label, start, end)`` sample intervals, clipped to ``[0, n)``, sorted by start."""
    conducted = spans.beats != _PVC
    with_p = conducted & ~np.isnan(spans.p_on)
    s = spans
    where = {
        "AF": (np.array([0.0]), np.array([n / fs])),
        "Normal": (np.array([0.0]), np.array([n / fs])),
        "I-AVB": (s.p_on[with_p], s.qrs_on[with_p]),
        "LBBB": (s.qrs_on[conducted], s.j[conducted]),
        "RBBB": (s.qrs_on[conducted], s.j[conducted]),
        "STD": (s.j[conducted], s.t_peak[conducted]),
        "STE": (s.j[conducted], s.t_peak[conducted]),
        "PAC": (s.p_on[s.beats == _PAC], s.t_end[s.beats == _PAC]),
        "PVC": (s.qrs_on[s.beats == _PVC], s.t_end[s.beats == _PVC]),
    }
    out = []
    for label in labels:
        a, b = where[label]
        a = np.clip(np.rint(a * fs), 0, n).astype(int)
        b = np.clip(np.rint(b * fs), 0, n).astype(int)
        out += [(label, int(x), int(y)) for x, y in zip(a, b) if y > x]
    return sorted(out, key=lambda e: (e[1], e[2], e[0]))


# --------------------------------------------------------------------------------------------
# Public API.

def sample_labels(rng: np.random.Generator, balanced: bool = False) -> list[str]:
    """A CPSC-like label set (class names in canonical order).

    Default: drawn with CPSC 2018's own label-set frequencies (about 7% multilabel, mostly pairs
    such as AF+RBBB). ``balanced``: a class drawn uniformly, then a CPSC label set containing it.
    """
    if balanced:
        cls = CLASSES[rng.integers(len(CLASSES))]
        idx = [i for i, s in enumerate(_SETS) if cls in s]
        p = _SET_P[idx] / _SET_P[idx].sum()
        chosen = _SETS[idx[rng.choice(len(idx), p=p)]]
    else:
        chosen = _SETS[rng.choice(len(_SETS), p=_SET_P)]
    return [c for c in CLASSES if c in chosen]


def sample_duration(rng: np.random.Generator, durations: tuple[float, float] | None = None
                    ) -> float:
    """Record length in seconds: CPSC-like (6-60 s, a third exactly 10 s, median about 12 s), or
    uniform in ``durations = (min_s, max_s)``."""
    if durations is not None:
        lo, hi = durations
        return float(lo if hi <= lo else rng.uniform(lo, hi))
    u = rng.random()
    if u < 0.33:
        return 10.0
    if u < 0.8:
        return float(np.clip(rng.lognormal(np.log(13.0), 0.22), 6.0, 20.0))
    return float(np.exp(rng.uniform(np.log(15.0), np.log(60.0))))


def check_labels(labels: Sequence[str]) -> set[str]:
    """The label set, or ValueError if it is empty, unknown or cannot be simulated."""
    found = set(labels)
    unknown = found - set(CLASSES)
    if unknown or not found:
        raise ValueError(f"synthetic labels must be a non-empty subset of {CLASSES}, "
                         f"got {list(labels)}")
    if "Normal" in found and len(found) > 1:
        raise ValueError(f"Normal cannot be combined with other labels: {sorted(found)}")
    for pair in _EXCLUSIVE:
        if pair <= found:
            raise ValueError(f"the synthetic generator cannot combine {sorted(pair)}")
    return found


def check_nuisance(nuisance: str) -> str:
    """``nuisance`` if it is a known level, else ValueError."""
    if nuisance not in NUISANCE_LEVELS:
        raise ValueError(f"synthetic nuisance must be one of {sorted(NUISANCE_LEVELS)}, "
                         f"got {nuisance!r}")
    return nuisance


def check_lead_gains(name: str) -> np.ndarray:
    """The (12,) gains of ``name`` in :data:`LEAD_GAINS`, else ValueError."""
    if name not in LEAD_GAINS:
        raise ValueError(f"synthetic lead_gains must be one of {sorted(LEAD_GAINS)}, "
                         f"got {name!r}")
    return LEAD_GAINS[name]


@dataclass(frozen=True)
class Realism:
    """The generator's realism options, one object from the config to every record: ``nuisance``
    (:data:`NUISANCE_LEVELS`), ``st_variety`` (:data:`DEFAULT_ST_VARIETY`), ``lead_gains``
    (:data:`LEAD_GAINS`) and ``discordant_st`` (:data:`DEFAULT_DISCORDANT_ST`). Each leaves the
    evidence as it is; the defaults make version 1's records. Checked when made, so a bad name
    fails before any record is drawn."""

    nuisance: str = DEFAULT_NUISANCE
    st_variety: bool = DEFAULT_ST_VARIETY
    lead_gains: str = DEFAULT_LEAD_GAINS
    discordant_st: bool = DEFAULT_DISCORDANT_ST

    def __post_init__(self) -> None:
        check_nuisance(self.nuisance)
        check_lead_gains(self.lead_gains)

    @property
    def version(self) -> int:
        """The generator version these options make (version 1 unless ``nuisance="wide"``)."""
        return NUISANCE_LEVELS[self.nuisance]

    def tag(self) -> str:
        """The options' part of a store fingerprint: empty for version 1's, so its stores stay
        current, else `` nuisance=NAME``, `` st_variety=True``, `` lead_gains=NAME``,
        `` discordant_st=True``."""
        return (("" if self.nuisance == "v1" else f" nuisance={self.nuisance}")
                + (" st_variety=True" if self.st_variety else "")
                + ("" if self.lead_gains == "v1" else f" lead_gains={self.lead_gains}")
                + (" discordant_st=True" if self.discordant_st else ""))


def synth_record(seed: int, index: int, labels: Sequence[str] | None = None, fs: float = 500.0,
                 duration_s: float | None = None, durations: tuple[float, float] | None = None,
                 balanced: bool = False, noise: bool = True,
                 realism: Realism = Realism()) -> Record:
    """Synthetic record ``S{index:06d}``: signal ``12 x N`` float32 mV, labels and evidence.

    ``labels`` default to :func:`sample_labels`; ``duration_s`` fixes the length, else it is drawn
    by :func:`sample_duration` (``durations`` narrows it). ``realism.nuisance`` picks the level of
    :data:`NUISANCE_LEVELS`; ``"wide"`` also varies the heart rate and each beat's waves more.
    ``noise=False`` leaves out everything that is not the heart (baseline wander, electrode noise,
    hum, motion and, at ``"wide"``, the recorder's gains, filters, saturation and lead-off): the
    cardiac signal and evidence are the same either way. ``realism.st_variety`` varies normal
    ST/T (J-point elevation, T size and axis) and makes STE clearer (:data:`DEFAULT_ST_VARIETY`);
    ``realism.lead_gains`` picks the projection's per-lead gains (:data:`LEAD_GAINS`); the
    evidence is the same either way. The content depends only on ``(seed, index)`` and these
    options.
    """
    wide = realism.nuisance == "wide"
    # The first three streams are version 1's; the next two are used only by "wide", the last
    # only by st_variety, the last only by discordant_st (spawned children do not depend on how
    # many are spawned).
    rng_labels, rng_heart, rng_noise, rng_beats, rng_front, rng_st, rng_secondary = (
        np.random.default_rng([seed, index]).spawn(7))
    names = sample_labels(rng_labels, balanced) if labels is None else list(labels)
    found = check_labels(names)
    duration = sample_duration(rng_labels, durations) if duration_s is None else float(duration_s)
    n = int(round(duration * fs))
    if duration < 2.0:
        raise ValueError(f"synthetic records must last at least 2 s, asked for {duration:g} s")
    t = np.arange(n) / fs

    heart = _Heart(rng_heart, found, rng_st if realism.st_variety else None,
                   _LEAD * LEAD_GAINS[realism.lead_gains][:, None],
                   rng_secondary if realism.discordant_st else None)
    rhythm = _rhythm(rng_heart, heart, found, duration, rng_beats if wide else None)
    signal, spans = _draw(rng_heart, heart, rhythm, found, fs, n, rng_beats if wide else None)
    if "AF" in found:
        signal += _f_waves(rng_heart, t, fs)
    # Breathing moves the heart: a slow swing in amplitude.
    signal *= 1 + rng_heart.uniform(0, 0.08) * np.sin(2 * np.pi * rng_heart.uniform(0.15, 0.4) * t
                                                      + rng_heart.uniform(0, 7))
    if noise and wide:
        signal = _front_end(rng_front, signal + _wide_noise(rng_noise, t, fs), fs)
    elif noise:
        signal += _noise(rng_noise, t)
    return Record(id=f"S{index:06d}", signal=signal.astype(np.float32), fs=float(fs),
                  labels=multi_hot(found), source="synthetic",
                  evidence=_evidence(found, spans, fs, n))


def fingerprint(n: int, seed: int, fs: float, durations: tuple[float, float] | None,
                balanced: bool, realism: Realism = Realism()) -> str:
    """The store fingerprint of a synthetic data set: generator version plus every option
    (:meth:`Realism.tag`: version 1's options give version 1's fingerprint)."""
    dur = "cpsc" if durations is None else f"{durations[0]:g}-{durations[1]:g}"
    return (f"synthetic v{realism.version} n={n} seed={seed} fs={fs:g} durations={dur} "
            f"balanced={bool(balanced)}" + realism.tag())


def make_synthetic_store(out: str | os.PathLike, n: int = 2000, seed: int = 0, fs: float = 500.0,
                         durations: tuple[float, float] | None = None, balanced: bool = False,
                         progress: bool = True, force: bool = False,
                         realism: Realism = Realism()) -> Path:
    """Write ``n`` synthetic records to the store ``out`` (reused if made with the same options).

    Prints a short summary (records, per-class counts, multilabel, median duration).
    """
    out = Path(out)
    fp = fingerprint(n, seed, fs, durations, balanced, realism)
    reclaim_stale(out)  # a killed writer's leftovers: before judging the store
    if not force and is_current(out, fp):
        print(f"{out}: synthetic store is current ({fp}); reusing it")
        return out
    if not is_store(out) and out.exists() and any(out.iterdir()):
        raise StoreError(f"{out}: exists and is not an xecg store; will not overwrite it")
    from tqdm.auto import tqdm

    meta = {"generator": {"name": "xecg.data.synthetic", "version": realism.version,
                          "n": n, "seed": seed, "durations": durations,
                          "balanced": bool(balanced), **asdict(realism)}}
    with StoreWriter(out, fs, source="synthetic", fingerprint=fp, extra_meta=meta) as writer:
        for i in tqdm(range(n), desc="synthetic", unit="rec", disable=not progress):
            writer.add(synth_record(seed, i, fs=fs, durations=durations, balanced=balanced,
                                    realism=realism))
        summary = writer.summary()
    counts = {k: v for k, v in summary["class_counts"].items() if v}
    print(f"{out}: {summary['records']:,} synthetic records ({fp}); "
          f"multilabel {summary['multilabel']:,}; median {summary['median_length_s']:.1f} s")
    print("  " + ", ".join(f"{k} {v:,}" for k, v in counts.items()))
    return out

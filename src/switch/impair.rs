//! The link impairment model (sans-IO): what happens to one frame leaving
//! one direction of a link, in netem's order: duplicate, loss
//! (random with correlation, or Gilbert-Elliott), corrupt, queue limit,
//! reorder, delay with jitter, rate. Time comes in as an argument, and
//! every random draw comes from the direction's own seeded generator, so
//! a seeded run treats the same frames the same way every time.
//!
//! Owns: impairment parameters, their parsing, and per-direction state.
//! Must not touch: fds, clocks, the data plane.
use std::time::Duration;

// The parameters are the vocabulary's; the model is the switch's.
pub use crate::vocab::impair::{Distribution, LossModel, Params};

/// A small, fast, seedable generator (SplitMix64): one per link direction.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn seeded(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Why the model dropped a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Drop {
    Loss,
    QueueFull,
}

/// One copy of a frame to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Departure {
    /// When it may leave (never before `now`).
    pub at: Duration,
    /// A bit to flip (index into the frame's bits), if corrupted.
    pub flip_bit: Option<usize>,
}

/// What becomes of one frame: up to two copies (duplicate), or drops.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    pub departures: Vec<Departure>,
    pub drops: Vec<Drop>,
}

/// The state of one direction: its generator, loss state, reorder
/// counter and the time its last frame leaves at the configured rate.
#[derive(Clone, Debug)]
pub struct Direction {
    pub params: Params,
    rng: Rng,
    last_lost: bool,
    bad_state: bool,
    since_reorder: u32,
    next_free: Duration,
}

impl Direction {
    pub fn new(params: Params, seed: u64) -> Direction {
        Direction {
            params,
            rng: Rng::seeded(seed),
            last_lost: false,
            bad_state: false,
            since_reorder: 0,
            next_free: Duration::ZERO,
        }
    }

    fn lost(&mut self) -> bool {
        match self.params.loss {
            LossModel::None => false,
            LossModel::Random { p, correlation: c } => {
                let (p, c) = (p.get(), c.get());
                // A two-state chain whose stationary loss rate is p:
                // P(lost | lost before) = c + (1-c)p, P(lost | not) = (1-c)p.
                let threshold = if self.last_lost { c + (1.0 - c) * p } else { (1.0 - c) * p };
                self.last_lost = p > 0.0 && self.rng.unit() < threshold;
                self.last_lost
            }
            LossModel::Gilbert { p, r, h, k } => {
                let (p, r, h, k) = (p.get(), r.get(), h.get(), k.get());
                // Move between states first, then draw the loss of this state.
                let flip = self.rng.unit();
                self.bad_state = if self.bad_state { flip >= r } else { flip < p };
                let delivered = if self.bad_state { h } else { k };
                self.rng.unit() >= delivered
            }
        }
    }

    fn jitter(&mut self) -> f64 {
        let j = self.params.jitter.get().as_secs_f64();
        if j == 0.0 {
            return 0.0;
        }
        match self.params.distribution {
            Distribution::Uniform => (self.rng.unit() * 2.0 - 1.0) * j,
            Distribution::Normal => {
                // Box-Muller: a standard normal, scaled by the jitter.
                let (u1, u2) = (self.rng.unit().max(f64::MIN_POSITIVE), self.rng.unit());
                (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos() * j
            }
            Distribution::Pareto => {
                // Pareto with shape 3 (mean 1.5·scale), shifted to mean 0.
                let shape = 3.0;
                let scale = j * (shape - 1.0) / shape;
                let x = scale / (1.0 - self.rng.unit()).powf(1.0 / shape);
                x - j
            }
        }
    }

    /// Decides the fate of a frame of `len` bytes arriving at `now`, with
    /// `queued` frames of this direction still waiting to leave.
    pub fn on_frame(&mut self, now: Duration, len: usize, queued: usize) -> Verdict {
        let mut verdict = Verdict::default();
        let duplicate = self.params.duplicate.get();
        let copies = if duplicate > 0.0 && self.rng.unit() < duplicate { 2 } else { 1 };
        for _ in 0..copies {
            if self.lost() {
                verdict.drops.push(Drop::Loss);
                continue;
            }
            let corrupt = self.params.corrupt.get();
            let flip_bit = (corrupt > 0.0 && self.rng.unit() < corrupt)
                .then(|| (self.rng.next_u64() % (len.max(1) as u64 * 8)) as usize);
            if queued + verdict.departures.len() >= self.params.limit.get() as usize {
                verdict.drops.push(Drop::QueueFull);
                continue;
            }
            // Reorder: some frames skip the delay and overtake the others.
            self.since_reorder += 1;
            let reorder = self.params.reorder.get();
            let early = reorder > 0.0 && self.since_reorder >= self.params.gap.max(1) && self.rng.unit() < reorder;
            let mut at = if early {
                self.since_reorder = 0;
                now
            } else {
                // Delay and jitter are at most an hour each: no overflow.
                let d = (self.params.delay.get().as_secs_f64() + self.jitter()).max(0.0);
                now.saturating_add(Duration::from_secs_f64(d))
            };
            if let Some(rate) = self.params.rate {
                // At least 1 bit/s and at most 64 KiB frames: a finite time.
                let wire = Duration::from_secs_f64(len as f64 * 8.0 / rate.get() as f64);
                let start = at.max(self.next_free);
                self.next_free = start.saturating_add(wire);
                at = self.next_free;
            }
            verdict.departures.push(Departure { at, flip_bit });
        }
        verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::units::test_values::{delay, limit, p as prob, rate};

    const MS: Duration = Duration::from_millis(1);

    fn run(params: Params, seed: u64, frames: usize) -> Vec<Verdict> {
        let mut d = Direction::new(params, seed);
        (0..frames).map(|i| d.on_frame(MS * i as u32, 1000, 0)).collect()
    }

    fn loss_rate(v: &[Verdict]) -> f64 {
        v.iter().filter(|x| x.departures.is_empty()).count() as f64 / v.len() as f64
    }

    #[test]
    fn untouched_by_default_and_delayed_exactly() {
        assert!(Params::default().is_noop());
        let delay_only = Params { delay: delay(5 * MS), limit: limit(10), ..Params::default() };
        assert!(!delay_only.is_noop() && !delay_only.per_wire_frame(), "a plain delay may hold super-frames whole");
        assert!(Params { jitter: delay(MS), ..delay_only.clone() }.per_wire_frame());
        assert!(Params { rate: Some(rate(1_000_000)), ..delay_only }.per_wire_frame());
        let v = run(Params { delay: delay(20 * MS), ..Params::default() }, 1, 3);
        assert_eq!(v[2].departures, [Departure { at: 22 * MS, flip_bit: None }]);
    }

    #[test]
    fn jitter_stays_around_the_delay_for_every_distribution() {
        for dist in [Distribution::Uniform, Distribution::Normal, Distribution::Pareto] {
            let p = Params { delay: delay(50 * MS), jitter: delay(10 * MS), distribution: dist, ..Params::default() };
            let mut d = Direction::new(p, 7);
            let delays: Vec<f64> =
                (0..20_000).map(|_| d.on_frame(Duration::ZERO, 100, 0).departures[0].at.as_secs_f64() * 1e3).collect();
            let mean = delays.iter().sum::<f64>() / delays.len() as f64;
            assert!((mean - 50.0).abs() < 0.5, "{dist:?}: mean {mean}");
            if dist == Distribution::Uniform {
                assert!(delays.iter().all(|d| (40.0..=60.0).contains(d)), "uniform stays within ±jitter");
            }
            // Pareto is skewed: a long tail above, a short one below.
            let low = if dist == Distribution::Pareto { 49.0 } else { 45.0 };
            assert!(delays.iter().any(|d| *d > 55.0) && delays.iter().any(|d| *d < low), "{dist:?} varies");
        }
    }

    #[test]
    fn random_loss_matches_its_rate_and_correlation_makes_bursts() {
        let plain = run(
            Params { loss: LossModel::Random { p: prob(0.1), correlation: prob(0.0) }, ..Params::default() },
            3,
            100_000,
        );
        assert!((loss_rate(&plain) - 0.1).abs() < 0.005, "{}", loss_rate(&plain));
        let longest_burst = |v: &[Verdict]| {
            let (mut best, mut cur) = (0, 0);
            for x in v {
                cur = if x.departures.is_empty() { cur + 1 } else { 0 };
                best = best.max(cur);
            }
            best
        };
        let bursty = run(
            Params { loss: LossModel::Random { p: prob(0.1), correlation: prob(0.9) }, ..Params::default() },
            3,
            100_000,
        );
        assert!(longest_burst(&bursty) > longest_burst(&plain), "correlated losses come in longer runs");
        assert!((loss_rate(&bursty) - 0.1).abs() < 0.02, "and keep their rate: {}", loss_rate(&bursty));
    }

    #[test]
    fn gilbert_elliott_loses_at_its_stationary_rate() {
        // Stationary P(bad) = p / (p + r); loss = P(bad)(1-h) + P(good)(1-k).
        let (p, r, h, k) = (0.05, 0.25, 0.2, 0.99);
        let gilbert = LossModel::Gilbert { p: prob(p), r: prob(r), h: prob(h), k: prob(k) };
        let v = run(Params { loss: gilbert, ..Params::default() }, 11, 200_000);
        let bad = p / (p + r);
        let expected = bad * (1.0 - h) + (1.0 - bad) * (1.0 - k);
        assert!((loss_rate(&v) - expected).abs() < 0.01, "{} vs {expected}", loss_rate(&v));
        // The simple Gilbert model (h = 0, k = 1) loses exactly in the bad state.
        let simple = run(
            Params {
                loss: LossModel::Gilbert { p: prob(p), r: prob(r), h: prob(0.0), k: prob(1.0) },
                ..Params::default()
            },
            11,
            200_000,
        );
        assert!((loss_rate(&simple) - bad).abs() < 0.01);
    }

    #[test]
    fn gilbert_elliott_moves_between_states_as_told() {
        // Certain transitions (p = r = 1): good, bad, good, … with every
        // frame lost in the bad state and none in the good one.
        let always = Params {
            loss: LossModel::Gilbert { p: prob(1.0), r: prob(1.0), h: prob(0.0), k: prob(1.0) },
            ..Params::default()
        };
        let lost: Vec<bool> = run(always, 1, 6).iter().map(|v| v.departures.is_empty()).collect();
        assert_eq!(lost, [true, false, true, false, true, false], "enters bad at once, then alternates");
        // Never leaving the good state (p = 0) loses only with k < 1.
        let never = Params {
            loss: LossModel::Gilbert { p: prob(0.0), r: prob(0.5), h: prob(0.0), k: prob(1.0) },
            ..Params::default()
        };
        assert!(run(never, 1, 1000).iter().all(|v| !v.departures.is_empty()));
        // A sticky bad state (r = 0) keeps losing once entered.
        let sticky = Params {
            loss: LossModel::Gilbert { p: prob(0.1), r: prob(0.0), h: prob(0.0), k: prob(1.0) },
            ..Params::default()
        };
        let v = run(sticky, 4, 500);
        let first = v.iter().position(|x| x.departures.is_empty()).expect("enters the bad state");
        assert!(v[first..].iter().all(|x| x.departures.is_empty()), "never recovers with r = 0");
    }

    #[test]
    fn duplicates_come_first_and_each_copy_may_be_lost() {
        let all_dup = run(Params { duplicate: prob(1.0), ..Params::default() }, 5, 10);
        assert!(all_dup.iter().all(|v| v.departures.len() == 2));
        let dup_and_loss = run(
            Params {
                duplicate: prob(1.0),
                loss: LossModel::Random { p: prob(0.5), correlation: prob(0.0) },
                ..Params::default()
            },
            5,
            20_000,
        );
        let copies: usize = dup_and_loss.iter().map(|v| v.departures.len()).sum();
        assert!((copies as f64 / 20_000.0 - 1.0).abs() < 0.05, "two copies, each lost half the time: {copies}");
        assert!(dup_and_loss.iter().any(|v| v.departures.len() == 1 && v.drops == [Drop::Loss]));
    }

    #[test]
    fn corruption_flips_one_bit_inside_the_frame() {
        let v = run(Params { corrupt: prob(1.0), ..Params::default() }, 9, 100);
        assert!(v.iter().all(|x| x.departures[0].flip_bit.is_some_and(|b| b < 8000)));
    }

    #[test]
    fn the_queue_limit_drops_and_reorder_overtakes() {
        let mut d = Direction::new(Params { limit: limit(3), ..Params::default() }, 1);
        assert_eq!(d.on_frame(Duration::ZERO, 100, 3).drops, [Drop::QueueFull]);
        assert_eq!(d.on_frame(Duration::ZERO, 100, 2).departures.len(), 1);
        // reorder 100 % with gap 5: every fifth frame skips the 10 ms delay.
        let v = run(Params { delay: delay(10 * MS), reorder: prob(1.0), gap: 5, ..Params::default() }, 1, 10);
        let early: Vec<usize> = (0..10).filter(|i| v[*i].departures[0].at == MS * *i as u32).collect();
        assert_eq!(early, [4, 9]);
    }

    #[test]
    fn rate_paces_frames_on_the_wire() {
        // 1000-byte frames at 8 Mbit/s take 1 ms each, back to back.
        let mut d = Direction::new(Params { rate: Some(rate(8_000_000)), ..Params::default() }, 1);
        let at: Vec<Duration> = (0..3).map(|_| d.on_frame(Duration::ZERO, 1000, 0).departures[0].at).collect();
        assert_eq!(at, [MS, 2 * MS, 3 * MS]);
        // After a pause, the wire is free again.
        assert_eq!(d.on_frame(10 * MS, 1000, 0).departures[0].at, 11 * MS);
    }

    #[test]
    fn the_same_seed_makes_the_same_decisions() {
        let p = Params {
            delay: delay(5 * MS),
            jitter: delay(2 * MS),
            loss: LossModel::Random { p: prob(0.2), correlation: prob(0.3) },
            duplicate: prob(0.05),
            reorder: prob(0.1),
            corrupt: prob(0.01),
            ..Params::default()
        };
        assert_eq!(run(p.clone(), 42, 5000), run(p.clone(), 42, 5000));
        assert_ne!(run(p.clone(), 42, 5000), run(p, 43, 5000));
    }
}

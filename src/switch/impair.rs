//! The link impairment model (sans-IO): what happens to one frame leaving
//! one direction of a link, in netem's order (DESIGN §2): duplicate, loss
//! (random with correlation, or Gilbert-Elliott), corrupt, queue limit,
//! reorder, delay with jitter, rate. Time comes in as an argument, and
//! every random draw comes from the direction's own seeded generator, so
//! a seeded run treats the same frames the same way every time.
//!
//! Owns: impairment parameters, their parsing, and per-direction state.
//! Must not touch: fds, clocks, the data plane.
use std::time::Duration;

use serde::{Deserialize, Serialize};

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

/// How jitter is distributed around the delay.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Distribution {
    #[default]
    Uniform,
    Normal,
    Pareto,
}

/// Which frames are lost.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LossModel {
    #[default]
    None,
    /// Each frame with probability `p`; with `correlation` c a frame
    /// shares the previous frame's fate with probability c, so losses come
    /// in bursts while the loss rate stays `p` (netem's own correlation
    /// lowers the rate it was given).
    Random { p: f64, correlation: f64 },
    /// Gilbert-Elliott: a good and a bad state; `p` = P(good -> bad),
    /// `r` = P(bad -> good), `h` = P(delivered | bad), `k` = P(delivered | good).
    Gilbert { p: f64, r: f64, h: f64, k: f64 },
}

/// The impairments of one direction of a link. Probabilities are 0..=1.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Params {
    pub delay: Duration,
    pub jitter: Duration,
    pub distribution: Distribution,
    pub loss: LossModel,
    pub duplicate: f64,
    pub reorder: f64,
    /// Every `gap`-th frame may be sent early (netem's gap; 0 = any).
    pub gap: u32,
    pub corrupt: f64,
    /// Bits per second; None = unlimited.
    pub rate: Option<u64>,
    /// Frames the direction may hold at once.
    pub limit: usize,
}

pub const DEFAULT_LIMIT: usize = 1000;

impl Default for Params {
    fn default() -> Params {
        Params {
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            distribution: Distribution::Uniform,
            loss: LossModel::None,
            duplicate: 0.0,
            reorder: 0.0,
            gap: 0,
            corrupt: 0.0,
            rate: None,
            limit: DEFAULT_LIMIT,
        }
    }
}

// Values are checked finite when parsed, so equality is reflexive.
impl Eq for Params {}
impl Eq for LossModel {}

impl Params {
    /// Whether frames go through untouched (the switch's fast path).
    pub fn is_noop(&self) -> bool {
        *self == Params { limit: self.limit, ..Params::default() }
    }

    /// Whether each frame a wire would carry needs its own draw (or its
    /// own time on the wire): everything but a plain fixed delay. A fixed
    /// delay treats a GSO super-frame exactly as it would each of its
    /// segments, so the switch may hold it whole.
    pub fn per_wire_frame(&self) -> bool {
        *self != Params { delay: self.delay, limit: self.limit, ..Params::default() }
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
                // A two-state chain whose stationary loss rate is p:
                // P(lost | lost before) = c + (1-c)p, P(lost | not) = (1-c)p.
                let threshold = if self.last_lost { c + (1.0 - c) * p } else { (1.0 - c) * p };
                self.last_lost = p > 0.0 && self.rng.unit() < threshold;
                self.last_lost
            }
            LossModel::Gilbert { p, r, h, k } => {
                // Move between states first, then draw the loss of this state.
                let flip = self.rng.unit();
                self.bad_state = if self.bad_state { flip >= r } else { flip < p };
                let delivered = if self.bad_state { h } else { k };
                self.rng.unit() >= delivered
            }
        }
    }

    fn jitter(&mut self) -> f64 {
        let j = self.params.jitter.as_secs_f64();
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
        let copies = if self.params.duplicate > 0.0 && self.rng.unit() < self.params.duplicate { 2 } else { 1 };
        for _ in 0..copies {
            if self.lost() {
                verdict.drops.push(Drop::Loss);
                continue;
            }
            let flip_bit = (self.params.corrupt > 0.0 && self.rng.unit() < self.params.corrupt)
                .then(|| (self.rng.next_u64() % (len.max(1) as u64 * 8)) as usize);
            if queued + verdict.departures.len() >= self.params.limit {
                verdict.drops.push(Drop::QueueFull);
                continue;
            }
            // Reorder: some frames skip the delay and overtake the others.
            self.since_reorder += 1;
            let early = self.params.reorder > 0.0
                && self.since_reorder >= self.params.gap.max(1)
                && self.rng.unit() < self.params.reorder;
            let mut at = if early {
                self.since_reorder = 0;
                now
            } else {
                let d = (self.params.delay.as_secs_f64() + self.jitter()).max(0.0);
                now + Duration::from_secs_f64(d)
            };
            if let Some(rate) = self.params.rate.filter(|r| *r > 0) {
                let wire = Duration::from_secs_f64(len as f64 * 8.0 / rate as f64);
                let start = at.max(self.next_free);
                self.next_free = start + wire;
                at = self.next_free;
            }
            verdict.departures.push(Departure { at, flip_bit });
        }
        verdict
    }
}

/// Errors in impairment values, for the script's error message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("{0:?} is not a time (use e.g. \"20ms\", \"1.5s\", \"250us\")")]
    Time(String),
    #[error("{0:?} is not a rate (use e.g. \"10mbit\", \"1gbit\", \"512kbit\")")]
    Rate(String),
    #[error("{what} {value} is out of range ({range})")]
    Range { what: &'static str, value: String, range: &'static str },
    #[error("unknown distribution {0:?} (uniform, normal or pareto)")]
    Distribution(String),
}

/// "20ms", "1.5s", "250us", "3ns" (no negative values).
pub fn parse_time(text: &str) -> Result<Duration, ParseError> {
    let t = text.trim();
    let bad = || ParseError::Time(text.to_string());
    let split = t.find(|c: char| c.is_ascii_alphabetic()).ok_or_else(bad)?;
    let (num, unit) = t.split_at(split);
    let value: f64 = num.trim().parse().map_err(|_| bad())?;
    if !value.is_finite() || value < 0.0 {
        return Err(ParseError::Range { what: "time", value: text.to_string(), range: "0 or more" });
    }
    let secs = match unit {
        "s" => value,
        "ms" => value / 1e3,
        "us" => value / 1e6,
        "ns" => value / 1e9,
        _ => return Err(bad()),
    };
    Ok(Duration::from_secs_f64(secs))
}

/// "10mbit", "1gbit", "512kbit", "9600bit", "100mbps" (bytes) → bits/s.
pub fn parse_rate(text: &str) -> Result<u64, ParseError> {
    let t = text.trim().to_ascii_lowercase();
    let bad = || ParseError::Rate(text.to_string());
    let split = t.find(|c: char| c.is_ascii_alphabetic()).ok_or_else(bad)?;
    let (num, unit) = t.split_at(split);
    let value: f64 = num.trim().parse().map_err(|_| bad())?;
    let factor = match unit {
        "bit" => 1.0,
        "kbit" => 1e3,
        "mbit" => 1e6,
        "gbit" => 1e9,
        "bps" => 8.0,
        "kbps" => 8e3,
        "mbps" => 8e6,
        "gbps" => 8e9,
        _ => return Err(bad()),
    };
    let bits = value * factor;
    if !bits.is_finite() || bits < 1.0 {
        return Err(ParseError::Range { what: "rate", value: text.to_string(), range: "at least 1bit" });
    }
    Ok(bits as u64)
}

/// A percentage (0..=100) as a probability.
pub fn percent(what: &'static str, value: f64) -> Result<f64, ParseError> {
    if !(0.0..=100.0).contains(&value) {
        return Err(ParseError::Range { what, value: value.to_string(), range: "0..=100 %" });
    }
    Ok(value / 100.0)
}

pub fn parse_distribution(text: &str) -> Result<Distribution, ParseError> {
    match text {
        "uniform" => Ok(Distribution::Uniform),
        "normal" => Ok(Distribution::Normal),
        "pareto" => Ok(Distribution::Pareto),
        _ => Err(ParseError::Distribution(text.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let delay_only = Params { delay: 5 * MS, limit: 10, ..Params::default() };
        assert!(!delay_only.is_noop() && !delay_only.per_wire_frame(), "a plain delay may hold super-frames whole");
        assert!(Params { jitter: MS, ..delay_only.clone() }.per_wire_frame());
        assert!(Params { rate: Some(1_000_000), ..delay_only }.per_wire_frame());
        let v = run(Params { delay: 20 * MS, ..Params::default() }, 1, 3);
        assert_eq!(v[2].departures, [Departure { at: 22 * MS, flip_bit: None }]);
    }

    #[test]
    fn jitter_stays_around_the_delay_for_every_distribution() {
        for dist in [Distribution::Uniform, Distribution::Normal, Distribution::Pareto] {
            let p = Params { delay: 50 * MS, jitter: 10 * MS, distribution: dist, ..Params::default() };
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
        let plain =
            run(Params { loss: LossModel::Random { p: 0.1, correlation: 0.0 }, ..Params::default() }, 3, 100_000);
        assert!((loss_rate(&plain) - 0.1).abs() < 0.005, "{}", loss_rate(&plain));
        let longest_burst = |v: &[Verdict]| {
            let (mut best, mut cur) = (0, 0);
            for x in v {
                cur = if x.departures.is_empty() { cur + 1 } else { 0 };
                best = best.max(cur);
            }
            best
        };
        let bursty =
            run(Params { loss: LossModel::Random { p: 0.1, correlation: 0.9 }, ..Params::default() }, 3, 100_000);
        assert!(longest_burst(&bursty) > longest_burst(&plain), "correlated losses come in longer runs");
        assert!((loss_rate(&bursty) - 0.1).abs() < 0.02, "and keep their rate: {}", loss_rate(&bursty));
    }

    #[test]
    fn gilbert_elliott_loses_at_its_stationary_rate() {
        // Stationary P(bad) = p / (p + r); loss = P(bad)(1-h) + P(good)(1-k).
        let (p, r, h, k) = (0.05, 0.25, 0.2, 0.99);
        let v = run(Params { loss: LossModel::Gilbert { p, r, h, k }, ..Params::default() }, 11, 200_000);
        let bad = p / (p + r);
        let expected = bad * (1.0 - h) + (1.0 - bad) * (1.0 - k);
        assert!((loss_rate(&v) - expected).abs() < 0.01, "{} vs {expected}", loss_rate(&v));
        // The simple Gilbert model (h = 0, k = 1) loses exactly in the bad state.
        let simple =
            run(Params { loss: LossModel::Gilbert { p, r, h: 0.0, k: 1.0 }, ..Params::default() }, 11, 200_000);
        assert!((loss_rate(&simple) - bad).abs() < 0.01);
    }

    #[test]
    fn gilbert_elliott_moves_between_states_as_told() {
        // Certain transitions (p = r = 1): good, bad, good, … with every
        // frame lost in the bad state and none in the good one.
        let always = Params { loss: LossModel::Gilbert { p: 1.0, r: 1.0, h: 0.0, k: 1.0 }, ..Params::default() };
        let lost: Vec<bool> = run(always, 1, 6).iter().map(|v| v.departures.is_empty()).collect();
        assert_eq!(lost, [true, false, true, false, true, false], "enters bad at once, then alternates");
        // Never leaving the good state (p = 0) loses only with k < 1.
        let never = Params { loss: LossModel::Gilbert { p: 0.0, r: 0.5, h: 0.0, k: 1.0 }, ..Params::default() };
        assert!(run(never, 1, 1000).iter().all(|v| !v.departures.is_empty()));
        // A sticky bad state (r = 0) keeps losing once entered.
        let sticky = Params { loss: LossModel::Gilbert { p: 0.1, r: 0.0, h: 0.0, k: 1.0 }, ..Params::default() };
        let v = run(sticky, 4, 500);
        let first = v.iter().position(|x| x.departures.is_empty()).expect("enters the bad state");
        assert!(v[first..].iter().all(|x| x.departures.is_empty()), "never recovers with r = 0");
    }

    #[test]
    fn duplicates_come_first_and_each_copy_may_be_lost() {
        let all_dup = run(Params { duplicate: 1.0, ..Params::default() }, 5, 10);
        assert!(all_dup.iter().all(|v| v.departures.len() == 2));
        let dup_and_loss = run(
            Params { duplicate: 1.0, loss: LossModel::Random { p: 0.5, correlation: 0.0 }, ..Params::default() },
            5,
            20_000,
        );
        let copies: usize = dup_and_loss.iter().map(|v| v.departures.len()).sum();
        assert!((copies as f64 / 20_000.0 - 1.0).abs() < 0.05, "two copies, each lost half the time: {copies}");
        assert!(dup_and_loss.iter().any(|v| v.departures.len() == 1 && v.drops == [Drop::Loss]));
    }

    #[test]
    fn corruption_flips_one_bit_inside_the_frame() {
        let v = run(Params { corrupt: 1.0, ..Params::default() }, 9, 100);
        assert!(v.iter().all(|x| x.departures[0].flip_bit.is_some_and(|b| b < 8000)));
    }

    #[test]
    fn the_queue_limit_drops_and_reorder_overtakes() {
        let mut d = Direction::new(Params { limit: 3, ..Params::default() }, 1);
        assert_eq!(d.on_frame(Duration::ZERO, 100, 3).drops, [Drop::QueueFull]);
        assert_eq!(d.on_frame(Duration::ZERO, 100, 2).departures.len(), 1);
        // reorder 100 % with gap 5: every fifth frame skips the 10 ms delay.
        let v = run(Params { delay: 10 * MS, reorder: 1.0, gap: 5, ..Params::default() }, 1, 10);
        let early: Vec<usize> = (0..10).filter(|i| v[*i].departures[0].at == MS * *i as u32).collect();
        assert_eq!(early, [4, 9]);
    }

    #[test]
    fn rate_paces_frames_on_the_wire() {
        // 1000-byte frames at 8 Mbit/s take 1 ms each, back to back.
        let mut d = Direction::new(Params { rate: Some(8_000_000), ..Params::default() }, 1);
        let at: Vec<Duration> = (0..3).map(|_| d.on_frame(Duration::ZERO, 1000, 0).departures[0].at).collect();
        assert_eq!(at, [MS, 2 * MS, 3 * MS]);
        // After a pause, the wire is free again.
        assert_eq!(d.on_frame(10 * MS, 1000, 0).departures[0].at, 11 * MS);
    }

    #[test]
    fn the_same_seed_makes_the_same_decisions() {
        let p = Params {
            delay: 5 * MS,
            jitter: 2 * MS,
            loss: LossModel::Random { p: 0.2, correlation: 0.3 },
            duplicate: 0.05,
            reorder: 0.1,
            corrupt: 0.01,
            ..Params::default()
        };
        assert_eq!(run(p.clone(), 42, 5000), run(p.clone(), 42, 5000));
        assert_ne!(run(p.clone(), 42, 5000), run(p, 43, 5000));
    }

    #[test]
    fn values_parse_with_clear_errors() {
        assert_eq!(parse_time("20ms").unwrap(), 20 * MS);
        assert_eq!(parse_time("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_time("250us").unwrap(), Duration::from_micros(250));
        assert!(matches!(parse_time("-5ms"), Err(ParseError::Range { .. })));
        assert_eq!(parse_time("5 parsecs"), Err(ParseError::Time("5 parsecs".into())));
        assert_eq!(parse_rate("10mbit").unwrap(), 10_000_000);
        assert_eq!(parse_rate("1Gbit").unwrap(), 1_000_000_000);
        assert_eq!(parse_rate("2mbps").unwrap(), 16_000_000);
        assert!(parse_rate("fast").is_err());
        assert_eq!(percent("loss", 12.5).unwrap(), 0.125);
        assert!(percent("loss", 101.0).unwrap_err().to_string().contains("0..=100 %"));
        assert_eq!(parse_distribution("pareto").unwrap(), Distribution::Pareto);
        assert!(parse_distribution("gauss").is_err());
    }
}

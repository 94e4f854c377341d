//! Link impairments as values: the parameters of one direction (netem's
//! set, plus seeds), both directions of a link, and the text forms
//! scripts write times, rates and distributions in.
//!
//! The model that applies them to frames is the switch's
//! (`switch::impair`); here are only the values and their rules.
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::units::{Delay, Probability, QueueLimit, Rate, MAX_TIME};
use super::VocabError;

/// How jitter is distributed around the delay.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Distribution {
    #[default]
    Uniform,
    Normal,
    Pareto,
}

impl std::str::FromStr for Distribution {
    type Err = VocabError;

    fn from_str(text: &str) -> Result<Distribution, VocabError> {
        match text {
            "uniform" => Ok(Distribution::Uniform),
            "normal" => Ok(Distribution::Normal),
            "pareto" => Ok(Distribution::Pareto),
            _ => Err(VocabError::UnknownDistribution(text.to_string())),
        }
    }
}

impl std::fmt::Display for Distribution {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Distribution::Uniform => "uniform",
            Distribution::Normal => "normal",
            Distribution::Pareto => "pareto",
        })
    }
}

/// Which frames are lost.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", try_from = "RawLoss")]
pub enum LossModel {
    #[default]
    None,
    /// Each frame with probability `p`; with `correlation` c a frame
    /// shares the previous frame's fate with probability c, so losses come
    /// in bursts while the loss rate stays `p` (netem's own correlation
    /// lowers the rate it was given).
    Random { p: Probability, correlation: Probability },
    /// Gilbert-Elliott: a good and a bad state; `p` = P(good -> bad),
    /// `r` = P(bad -> good), `h` = P(delivered | bad), `k` = P(delivered | good).
    Gilbert { p: Probability, r: Probability, h: Probability, k: Probability },
}

/// The impairments of one direction of a link.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, try_from = "RawParams")]
pub struct Params {
    pub delay: Delay,
    pub jitter: Delay,
    pub distribution: Distribution,
    pub loss: LossModel,
    pub duplicate: Probability,
    pub reorder: Probability,
    /// Every `gap`-th frame may be sent early (netem's gap; 0 = any).
    pub gap: u32,
    pub corrupt: Probability,
    /// None = unlimited.
    pub rate: Option<Rate>,
    /// Frames the direction may hold at once.
    pub limit: QueueLimit,
}

/// `LossModel` as it arrives, before each probability is checked under
/// its own name (serde alone could only say "probability").
#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum RawLoss {
    None,
    Random { p: f64, correlation: f64 },
    Gilbert { p: f64, r: f64, h: f64, k: f64 },
}

impl TryFrom<RawLoss> for LossModel {
    type Error = VocabError;

    fn try_from(raw: RawLoss) -> Result<LossModel, VocabError> {
        let prob = Probability::new;
        Ok(match raw {
            RawLoss::None => LossModel::None,
            RawLoss::Random { p, correlation } => {
                let (p, correlation) = (prob("loss", p)?, prob("loss_correlation", correlation)?);
                // A loss of 0 is no loss, as a script's `loss: 0` says: the
                // same impairment, whoever sends it, and the switch's fast path.
                if p.is_zero() {
                    LossModel::None
                } else {
                    LossModel::Random { p, correlation }
                }
            }
            RawLoss::Gilbert { p, r, h, k } => LossModel::Gilbert {
                p: prob("gilbert p", p)?,
                r: prob("gilbert r", r)?,
                h: prob("gilbert h", h)?,
                k: prob("gilbert k", k)?,
            },
        })
    }
}

/// `Params` as it arrives, so that a refused time or probability is
/// named by its field (`jitter`, `corrupt`), not by its type.
#[derive(Deserialize)]
#[serde(default)]
struct RawParams {
    delay: Duration,
    jitter: Duration,
    distribution: Distribution,
    loss: LossModel,
    duplicate: f64,
    reorder: f64,
    gap: u32,
    corrupt: f64,
    rate: Option<Rate>,
    limit: QueueLimit,
}

impl Default for RawParams {
    fn default() -> RawParams {
        RawParams {
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            distribution: Distribution::Uniform,
            loss: LossModel::None,
            duplicate: 0.0,
            reorder: 0.0,
            gap: 0,
            corrupt: 0.0,
            rate: None,
            limit: QueueLimit::DEFAULT,
        }
    }
}

impl TryFrom<RawParams> for Params {
    type Error = VocabError;

    fn try_from(raw: RawParams) -> Result<Params, VocabError> {
        Ok(Params {
            delay: Delay::new("delay", raw.delay)?,
            jitter: Delay::new("jitter", raw.jitter)?,
            distribution: raw.distribution,
            loss: raw.loss,
            duplicate: Probability::new("duplicate", raw.duplicate)?,
            reorder: Probability::new("reorder", raw.reorder)?,
            gap: raw.gap,
            corrupt: Probability::new("corrupt", raw.corrupt)?,
            rate: raw.rate,
            limit: raw.limit,
        })
    }
}

impl Default for Params {
    fn default() -> Params {
        Params {
            delay: Delay::ZERO,
            jitter: Delay::ZERO,
            distribution: Distribution::Uniform,
            loss: LossModel::None,
            duplicate: Probability::ZERO,
            reorder: Probability::ZERO,
            gap: 0,
            corrupt: Probability::ZERO,
            rate: None,
            limit: QueueLimit::DEFAULT,
        }
    }
}

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

    /// The rules between parameters (each value's range is its type's).
    pub fn check(&self) -> Result<(), VocabError> {
        if !self.reorder.is_zero() && self.delay.is_zero() {
            return Err(VocabError::invalid(
                "reorder",
                "reorder needs a delay (reordered frames skip it to overtake the others)",
            ));
        }
        if self.gap > 0 && self.reorder.is_zero() {
            return Err(VocabError::invalid("gap", "gap needs a reorder percentage"));
        }
        Ok(())
    }
}

/// The impairments of a link's two directions. On a LAN port, `a` is
/// the node and `b` the LAN; on a link between LANs, the two LANs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkImpairment {
    #[serde(default)]
    pub a_to_b: Params,
    #[serde(default)]
    pub b_to_a: Params,
    /// Fixes every random draw of both directions (reproducible runs).
    #[serde(default)]
    pub seed: Option<u64>,
}

impl LinkImpairment {
    pub fn is_noop(&self) -> bool {
        self.a_to_b.is_noop() && self.b_to_a.is_noop() && self.seed.is_none()
    }

    /// The rules of both directions, and a seed a script can write back
    /// (`:save` writes the seed as a Rhai integer, which is signed).
    pub fn check(&self) -> Result<(), VocabError> {
        if let Some(seed) = self.seed.filter(|s| i64::try_from(*s).is_err()) {
            return Err(VocabError::OutOfRange {
                option: "seed",
                value: seed.to_string(),
                range: "0..=9223372036854775807",
            });
        }
        self.a_to_b.check()?;
        self.b_to_a.check()
    }
}

/// `"1.5e3ms"` as `("1.5e3", "ms")`: the unit is the trailing letters, so
/// a number may have an exponent.
fn split_unit(text: &str) -> Option<(&str, &str)> {
    let num = text.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    (num.len() < text.len()).then(|| (num, &text[num.len()..]))
}

/// "20ms", "1.5s", "250us", "3ns": at most an hour, not negative.
pub fn parse_time(option: &'static str, text: &str) -> Result<Delay, VocabError> {
    let t = text.trim();
    let bad = || VocabError::NotATime(text.to_string());
    let (num, unit) = split_unit(t).ok_or_else(bad)?;
    let value: f64 = num.trim().parse().map_err(|_| bad())?;
    let scale = match unit {
        "s" => 1.0,
        "ms" => 1e3,
        "us" => 1e6,
        "ns" => 1e9,
        _ => return Err(bad()),
    };
    let secs = value / scale;
    // Checked before `Duration::from_secs_f64`, which panics on huge values.
    if !secs.is_finite() || !(0.0..=MAX_TIME.as_secs_f64()).contains(&secs) {
        return Err(VocabError::OutOfRange { option, value: text.to_string(), range: "0..=1h" });
    }
    Delay::new(option, Duration::from_secs_f64(secs))
}

/// A time in milliseconds as scripts may write it (a plain number).
pub fn millis(option: &'static str, ms: f64) -> Result<Delay, VocabError> {
    if !ms.is_finite() || !(0.0..=MAX_TIME.as_secs_f64() * 1e3).contains(&ms) {
        return Err(VocabError::OutOfRange { option, value: format!("{ms} ms"), range: "0..=3600000 ms" });
    }
    Delay::new(option, Duration::from_secs_f64(ms / 1e3))
}

/// "10mbit", "1gbit", "512kbit", "9600bit", "100mbps" (bytes) → bits/s.
pub fn parse_rate(text: &str) -> Result<Rate, VocabError> {
    let t = text.trim().to_ascii_lowercase();
    let bad = || VocabError::NotARate(text.to_string());
    let (num, unit) = split_unit(&t).ok_or_else(bad)?;
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
    if !bits.is_finite() || !(1.0..=Rate::MAX as f64).contains(&bits) {
        return Err(VocabError::OutOfRange { option: "rate", value: text.to_string(), range: "1bit..=1000gbit" });
    }
    Rate::new(bits as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn values_parse_with_clear_errors() {
        assert_eq!(parse_time("delay", "20ms").unwrap().get(), 20 * MS);
        assert_eq!(parse_time("delay", "1.5s").unwrap().get(), Duration::from_millis(1500));
        assert_eq!(parse_time("delay", "250us").unwrap().get(), Duration::from_micros(250));
        assert!(matches!(parse_time("delay", "-5ms"), Err(VocabError::OutOfRange { .. })));
        assert_eq!(parse_time("delay", "5 parsecs"), Err(VocabError::NotATime("5 parsecs".into())));
        for huge in ["1e300s", "inf s", "3601s", "NaNms"] {
            let e = parse_time("jitter", huge).unwrap_err().to_string();
            assert!(e.starts_with("jitter") || e.contains("not a time"), "{huge}: {e}");
        }
        assert!(millis("delay", 1e300).is_err() && millis("delay", -1.0).is_err());
        assert_eq!(millis("delay", 5.0).unwrap().get(), 5 * MS);
        assert_eq!(parse_time("delay", "1.5e3ms").unwrap().get(), Duration::from_millis(1500));
        assert!(parse_time("delay", "1e300s").unwrap_err().to_string().contains("out of range"));
        assert_eq!(parse_rate("10mbit").unwrap().get(), 10_000_000);
        assert_eq!(parse_rate("1Gbit").unwrap().get(), 1_000_000_000);
        assert_eq!(parse_rate("2mbps").unwrap().get(), 16_000_000);
        assert!(parse_rate("fast").is_err() && parse_rate("1e30gbit").is_err() && parse_rate("0.1bit").is_err());
        assert_eq!("pareto".parse::<Distribution>().unwrap(), Distribution::Pareto);
        assert!("gauss".parse::<Distribution>().is_err());
    }

    #[test]
    fn rules_between_parameters_hold_for_every_sender() {
        let reorder = Params { reorder: Probability::new("reorder", 0.5).unwrap(), ..Params::default() };
        assert!(reorder.check().unwrap_err().to_string().contains("needs a delay"));
        let gap = Params { gap: 3, ..Params::default() };
        assert!(gap.check().unwrap_err().to_string().contains("needs a reorder"));
        // The GUI's JSON form still reads, and bad values in it are refused.
        let gui = r#"{"delay":{"secs":0,"nanos":5000000},"loss":{"random":{"p":0.1,"correlation":0}},"rate":null}"#;
        let p: Params = serde_json::from_str(gui).unwrap();
        assert_eq!(p.delay.get(), 5 * MS);
        let bad = r#"{"delay":{"secs":100000,"nanos":0}}"#;
        assert!(serde_json::from_str::<Params>(bad).unwrap_err().to_string().contains("0..=1h"));
        let bad = r#"{"loss":{"random":{"p":7,"correlation":0}}}"#;
        assert!(serde_json::from_str::<Params>(bad).unwrap_err().to_string().contains("loss 7 is out of range"));
        let bad = r#"{"jitter":{"secs":7200,"nanos":0}}"#;
        assert!(serde_json::from_str::<Params>(bad).unwrap_err().to_string().starts_with("jitter 7200s"));
        let none = r#"{"loss":{"random":{"p":0,"correlation":0.25}}}"#;
        assert_eq!(serde_json::from_str::<Params>(none).unwrap().loss, LossModel::None, "a loss of 0 is no loss");
        assert!(serde_json::from_str::<Params>(none).unwrap().is_noop());
        let bad = r#"{"loss":{"random":{"p":0,"correlation":2}}}"#;
        assert!(serde_json::from_str::<Params>(bad).unwrap_err().to_string().contains("loss_correlation 2"));
        let bad = r#"{"limit":0}"#;
        assert!(serde_json::from_str::<Params>(bad).unwrap_err().to_string().contains("limit 0"));
        let seeded = |seed| LinkImpairment { seed: Some(seed), ..Default::default() };
        assert_eq!(seeded(i64::MAX as u64).check(), Ok(()));
        let e = seeded(u64::MAX).check().unwrap_err().to_string();
        assert!(e.starts_with("seed 18446744073709551615 is out of range"), "{e}");
    }
}

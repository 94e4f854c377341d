//! Bounded numbers: each type holds only values in its range, checked by
//! its constructor and by its serde `Deserialize`, and serializes as the
//! plain number (or, for times, as the `{secs, nanos}` object of a
//! `Duration`) it wraps, so the control protocol's JSON is unchanged.
//!
//! The limits are generous for labs and small enough that no sum or
//! product the engine makes of them overflows: times are at most an hour,
//! rates at most a terabit per second.
use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use super::VocabError;

/// The longest delay, jitter or timeout anything in a lab may take.
pub const MAX_TIME: Duration = Duration::from_secs(3600);

/// Reads any JSON integer (negative or beyond 64 bits alike) so that a
/// bounded type can say "out of range" with the option's name, rather
/// than serde's "expected u32".
fn wide_int<'de, D: Deserializer<'de>>(d: D) -> Result<i128, D::Error> {
    struct Wide;
    impl Visitor<'_> for Wide {
        type Value = i128;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an integer")
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<i128, E> {
            Ok(v.into())
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<i128, E> {
            Ok(v.into())
        }
        fn visit_i128<E: de::Error>(self, v: i128) -> Result<i128, E> {
            Ok(v)
        }
        fn visit_u128<E: de::Error>(self, v: u128) -> Result<i128, E> {
            Ok(i128::try_from(v).unwrap_or(i128::MAX))
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<i128, E> {
            // A float that is a whole number is taken (JSON writers differ);
            // `as` saturates, and the range check then refuses the value.
            if v.fract() == 0.0 {
                Ok(v as i128)
            } else {
                Err(E::custom(format!("{v} is not an integer")))
            }
        }
    }
    d.deserialize_any(Wide)
}

/// An integer type with a range; `$option` names it in errors.
macro_rules! bounded_integer {
    ($(#[$doc:meta])* $name:ident($inner:ty), $option:literal, $unit:literal, $min:expr, $max:expr, $range:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name($inner);

        // The bare number, so `Access(10)` reads as it did with plain ids.
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }

        impl $name {
            pub const MIN: $inner = $min;
            pub const MAX: $inner = $max;

            /// The value, if it is in range.
            pub fn new(value: impl Into<i128>) -> Result<$name, VocabError> {
                let value: i128 = value.into();
                if (Self::MIN as i128..=Self::MAX as i128).contains(&value) {
                    Ok($name(value as $inner))
                } else {
                    Err(VocabError::OutOfRange { option: $option, value: format!("{value}{}", $unit), range: $range })
                }
            }

            pub fn get(self) -> $inner {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                self.0.serialize(s)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<$name, D::Error> {
                $name::new(wide_int(d)?).map_err(de::Error::custom)
            }
        }
    };
}

bounded_integer!(
    /// Virtual CPUs of a machine node.
    Cpus(u32), "cpus", "", 1, 64, "1..=64"
);
bounded_integer!(
    /// Guest memory in MiB.
    MemMb(u32), "mem", " MiB", 16, 65536, "16..=65536"
);
bounded_integer!(
    /// The MTU of a node's interface: IPv4's minimum up to the largest
    /// frame a TAP with a virtio-net header carries.
    Mtu(u32), "MTU", "", 68, 65521, "68..=65521"
);
bounded_integer!(
    /// An 802.1Q VLAN id (0 and 4095 are reserved).
    VlanId(u16), "VLAN id", "", 1, 4094, "1..=4094"
);
bounded_integer!(
    /// Frames one direction of an impaired link may hold at once; bounded
    /// so that a held queue of 64 KiB frames cannot take the host's memory.
    QueueLimit(u32), "limit", "", 1, 100_000, "1..=100000"
);
bounded_integer!(
    /// Bits per second of a rate-limited link (1 bit/s to 1 Tbit/s).
    Rate(u64), "rate", " bit/s", 1, 1_000_000_000_000, "1bit..=1000gbit"
);

bounded_integer!(
    /// Bytes of one output stream (stdout or stderr) of a command run in a
    /// node that clonet keeps; what goes beyond is read and dropped, and
    /// the output says it was truncated. A guest could otherwise send
    /// more than the host's memory.
    OutputLimit(u64), "max_output", " bytes", 1, 256 << 20, "1..=268435456 (256 MiB)"
);

impl OutputLimit {
    /// The default: 16 MiB per stream.
    pub const DEFAULT: OutputLimit = OutputLimit(16 << 20);
}

impl Default for OutputLimit {
    fn default() -> OutputLimit {
        OutputLimit::DEFAULT
    }
}

impl Mtu {
    /// Ethernet's usual MTU, the default of node interfaces.
    pub const ETHERNET: Mtu = Mtu(1500);
}

impl VlanId {
    /// The VLAN of an access port that was given none.
    pub const DEFAULT: VlanId = VlanId(1);
}

impl QueueLimit {
    /// netem's default queue limit.
    pub const DEFAULT: QueueLimit = QueueLimit(1000);
}

/// Serde for a `Duration` wrapper: the plain `Duration` object on the
/// wire, checked by `$check` on the way in.
macro_rules! duration_serde {
    ($name:ident, $check:expr) => {
        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                self.0.serialize(s)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<$name, D::Error> {
                // A `Duration` whose nanos overflow into seconds past u64 is
                // refused by serde itself, with its own message.
                let check: fn(Duration) -> Result<$name, VocabError> = $check;
                check(Duration::deserialize(d)?).map_err(de::Error::custom)
            }
        }
    };
}

/// A link's delay or jitter: zero up to [`MAX_TIME`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Delay(Duration);

impl Delay {
    pub const ZERO: Delay = Delay(Duration::ZERO);

    /// `time` as the delay or jitter called `option`, if at most an hour.
    pub fn new(option: &'static str, time: Duration) -> Result<Delay, VocabError> {
        if time <= MAX_TIME {
            Ok(Delay(time))
        } else {
            Err(VocabError::OutOfRange { option, value: format!("{time:?}"), range: "0..=1h" })
        }
    }

    pub fn from_millis(ms: u64) -> Result<Delay, VocabError> {
        Delay::new("delay", Duration::from_millis(ms))
    }

    pub fn get(self) -> Duration {
        self.0
    }

    pub fn is_zero(self) -> bool {
        self.0.is_zero()
    }
}

duration_serde!(Delay, |d| Delay::new("time", d));

/// How long to wait for a command or an answer: 1 ms up to [`MAX_TIME`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Timeout(Duration);

impl Timeout {
    pub fn new(time: Duration) -> Result<Timeout, VocabError> {
        if (Duration::from_millis(1)..=MAX_TIME).contains(&time) {
            Ok(Timeout(time))
        } else {
            Err(VocabError::OutOfRange { option: "timeout", value: format!("{time:?}"), range: "1ms..=1h" })
        }
    }

    pub fn from_millis(ms: impl Into<i128>) -> Result<Timeout, VocabError> {
        let ms: i128 = ms.into();
        match u64::try_from(ms) {
            Ok(ms) => Timeout::new(Duration::from_millis(ms)),
            Err(_) => Err(VocabError::OutOfRange { option: "timeout", value: format!("{ms} ms"), range: "1ms..=1h" }),
        }
    }

    pub fn get(self) -> Duration {
        self.0
    }

    pub fn as_millis(self) -> u64 {
        // At most an hour: fits.
        self.0.as_millis() as u64
    }
}

duration_serde!(Timeout, Timeout::new);

/// A timeout written as whole milliseconds on the wire
/// (`#[serde(with = "timeout_ms")]`).
pub mod timeout_ms {
    use super::*;

    pub fn serialize<S: Serializer>(t: &Timeout, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(t.as_millis())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Timeout, D::Error> {
        Timeout::from_millis(wide_int(d)?).map_err(de::Error::custom)
    }
}

/// A probability, 0 to 1 and finite (so equality is reflexive).
#[derive(Clone, Copy, Debug, Default, PartialEq, PartialOrd)]
pub struct Probability(f64);

impl Eq for Probability {}

impl Probability {
    pub const ZERO: Probability = Probability(0.0);
    pub const ONE: Probability = Probability(1.0);

    pub fn new(option: &'static str, p: f64) -> Result<Probability, VocabError> {
        if (0.0..=1.0).contains(&p) {
            Ok(Probability(p))
        } else {
            Err(VocabError::OutOfRange { option, value: p.to_string(), range: "0..=1" })
        }
    }

    /// A percentage (0..=100) as a probability.
    pub fn percent(option: &'static str, pct: f64) -> Result<Probability, VocabError> {
        if (0.0..=100.0).contains(&pct) {
            Ok(Probability(pct / 100.0))
        } else {
            Err(VocabError::OutOfRange { option, value: pct.to_string(), range: "0..=100 %" })
        }
    }

    pub fn get(self) -> f64 {
        self.0
    }

    pub fn is_zero(self) -> bool {
        self.0 == 0.0
    }
}

impl Serialize for Probability {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(self.0)
    }
}

impl<'de> Deserialize<'de> for Probability {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Probability, D::Error> {
        Probability::new("probability", f64::deserialize(d)?).map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_outside_their_range_are_refused_with_the_option_named() {
        assert_eq!(Cpus::new(4).unwrap().get(), 4);
        assert_eq!(Cpus::new(0).unwrap_err().to_string(), "cpus 0 is out of range (1..=64)");
        assert!(MemMb::new(-1).unwrap_err().to_string().contains("mem -1"));
        assert!(VlanId::new(4095).is_err() && VlanId::new(0).is_err());
        assert!(Rate::new(0).is_err() && Rate::new(i128::MAX).is_err());
        let e = serde_json::from_str::<Cpus>("18446744073709551615").unwrap_err().to_string();
        assert!(e.contains("cpus 18446744073709551615 is out of range"), "{e}");
        let e = serde_json::from_str::<VlanId>("-3").unwrap_err().to_string();
        assert!(e.contains("VLAN id -3"), "{e}");
        assert!(serde_json::from_str::<Mtu>("1500.5").is_err());
        assert_eq!(serde_json::from_str::<Mtu>("9000").unwrap(), Mtu::new(9000).unwrap());
        assert_eq!(serde_json::to_string(&Mtu::ETHERNET).unwrap(), "1500");
    }

    #[test]
    fn times_are_bounded_and_keep_the_duration_wire_format() {
        assert!(Delay::new("delay", MAX_TIME).is_ok());
        let e = Delay::new("jitter", MAX_TIME + Duration::from_nanos(1)).unwrap_err().to_string();
        assert!(e.starts_with("jitter") && e.contains("0..=1h"), "{e}");
        let json = serde_json::to_string(&Delay::from_millis(20).unwrap()).unwrap();
        assert_eq!(json, r#"{"secs":0,"nanos":20000000}"#);
        assert!(serde_json::from_str::<Delay>(r#"{"secs":18446744073709551615,"nanos":0}"#).is_err());
        assert!(Timeout::new(Duration::ZERO).is_err());
        assert!(Timeout::from_millis(u64::MAX).is_err() && Timeout::from_millis(-1).is_err());
        assert_eq!(Timeout::from_millis(1500).unwrap().get(), Duration::from_millis(1500));
    }

    #[test]
    fn probabilities_are_finite_and_between_zero_and_one() {
        assert!(Probability::new("loss", f64::NAN).is_err());
        assert!(Probability::new("loss", 1.5).is_err());
        assert_eq!(Probability::percent("loss", 25.0).unwrap().get(), 0.25);
        assert!(Probability::percent("loss", 101.0).unwrap_err().to_string().contains("0..=100 %"));
        assert!(serde_json::from_str::<Probability>("2.0").is_err());
    }
}

/// Short constructors for tests elsewhere in the crate, which panic on a
/// value out of range.
#[cfg(test)]
pub mod test_values {
    use super::*;

    pub fn p(x: f64) -> Probability {
        Probability::new("probability", x).unwrap()
    }

    pub fn ms(x: u64) -> Delay {
        Delay::from_millis(x).unwrap()
    }

    pub fn delay(d: Duration) -> Delay {
        Delay::new("delay", d).unwrap()
    }

    pub fn rate(bits: u64) -> Rate {
        Rate::new(bits).unwrap()
    }

    pub fn limit(frames: u32) -> QueueLimit {
        QueueLimit::new(frames).unwrap()
    }

    pub fn vid(id: u16) -> VlanId {
        VlanId::new(id).unwrap()
    }
}

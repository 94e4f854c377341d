//! Bounds on what a script may take: operations, the sizes of strings,
//! arrays and maps, and wall-clock time.
//!
//! A lab script is the user's own, so its defaults are generous and the
//! user can raise them (`--limits`); tests are bounded more, and a
//! student's answer, which the grader did not write, the most, so that an
//! endless loop or a string doubled forty times ends with a clear error
//! instead of taking the grader's machine.
//!
//! Owns: the limits and their text form. Must not touch: the lab.
use std::time::{Duration, Instant};

use rhai::{Dynamic, Engine};

/// What one script may take. `None` is no bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScriptLimits {
    /// Rhai operations (each expression, call, loop step counts).
    pub operations: Option<u64>,
    /// Bytes of one string.
    pub string: usize,
    /// Items of one array or blob.
    pub array: usize,
    /// Entries of one object map.
    pub map: usize,
    /// Wall-clock time from when the limits are applied.
    pub time: Option<Duration>,
}

impl ScriptLimits {
    /// A lab script's (`clonet run`, the REPL): the user's own program.
    pub const LAB: ScriptLimits =
        ScriptLimits { operations: None, string: 256 << 20, array: 16 << 20, map: 1 << 20, time: None };
    /// A test file's (`clonet test`) and an exercise's own lab and checks.
    pub const TEST: ScriptLimits = ScriptLimits {
        operations: Some(1_000_000_000),
        string: 64 << 20,
        array: 1 << 20,
        map: 1 << 20,
        time: Some(Duration::from_secs(3600)),
    };
    /// A student's answer.
    pub const ANSWER: ScriptLimits = ScriptLimits {
        // An answer mostly calls the lab; ten million operations are
        // seconds of pure computation, and bound how far a map can grow
        // between two of Rhai's size checks.
        operations: Some(10_000_000),
        string: 16 << 20,
        array: 100_000,
        map: 100_000,
        time: Some(Duration::from_secs(600)),
    };

    /// `self` with the settings of `text`, a comma-separated list of
    /// `operations=N`, `string=BYTES`, `array=N`, `map=N`, `time=SECONDS`
    /// (`none` lifts a bound on operations or time).
    pub fn with(mut self, text: &str) -> Result<ScriptLimits, String> {
        for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (key, value) = item.split_once('=').ok_or_else(|| format!("{item:?}: expected KEY=VALUE"))?;
            let number = || value.trim().parse::<u64>().map_err(|_| format!("{key}: {value:?} is not a whole number"));
            let size = || number().and_then(|n| usize::try_from(n).map_err(|_| format!("{key}: {n} is too large")));
            let unbounded = value.trim() == "none";
            match key.trim() {
                "operations" if unbounded => self.operations = None,
                "operations" => self.operations = Some(number()?),
                "string" => self.string = size()?,
                "array" => self.array = size()?,
                "map" => self.map = size()?,
                "time" if unbounded => self.time = None,
                "time" => self.time = Some(Duration::from_secs(number()?)),
                other => return Err(format!("{other:?}: not a limit (operations, string, array, map, time)")),
            }
        }
        Ok(self)
    }

    /// Sets the limits on `engine`; the time limit runs from now. The
    /// engine's stop on Ctrl-C stays.
    pub fn apply(&self, engine: &mut Engine) {
        engine.set_max_operations(self.operations.unwrap_or(0));
        engine.set_max_string_size(self.string);
        engine.set_max_array_size(self.array);
        engine.set_max_map_size(self.map);
        let deadline = self.time.map(|t| (Instant::now() + t, t));
        engine.on_progress(move |ops| {
            if crate::interrupt::requested() {
                return Some(Dynamic::UNIT);
            }
            // Reading the clock every 1024 operations keeps the check cheap.
            match deadline {
                Some((at, limit)) if ops % 1024 == 0 && Instant::now() >= at => {
                    Some(format!("the script ran past its time limit ({} s)", limit.as_secs()).into())
                }
                _ => None,
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(limits: ScriptLimits, script: &str) -> String {
        let mut engine = Engine::new();
        limits.apply(&mut engine);
        match engine.run(script) {
            Ok(()) => "ok".into(),
            Err(e) => crate::script::report::ErrorReport::runtime("t", &e).message,
        }
    }

    #[test]
    fn each_bound_ends_a_greedy_script_with_a_clear_error() {
        let small = ScriptLimits { operations: Some(10_000), string: 1000, array: 100, map: 100, time: None };
        assert!(run(small, "loop {}").contains("Too many operations"), "{}", run(small, "loop {}"));
        assert!(run(small, r#"let s = "x"; for i in 0..20 { s += s; }"#).contains("Length of string"));
        assert!(run(small, "let a = []; for i in 0..200 { a.push(i); }").contains("Size of array"));
        // Rhai measures a map when it is next used, not at each `m[k] = v`;
        // the operations bound holds the growth in between.
        let map = run(small, "let m = #{}; for i in 0..200 { m[`k${i}`] = i; } m.len()");
        assert!(map.contains("Size of object map"), "{map}");
        let quick = ScriptLimits { time: Some(Duration::ZERO), ..ScriptLimits::LAB };
        assert_eq!(run(quick, "loop {}"), "the script ran past its time limit (0 s)");
        assert_eq!(run(ScriptLimits::LAB, "let s = 0; for i in 0..100000 { s += i; }"), "ok");
    }

    #[test]
    fn limits_are_raised_and_lifted_by_name() {
        let l = ScriptLimits::ANSWER.with("operations=none, string=1024,time=5").unwrap();
        assert_eq!((l.operations, l.string, l.time), (None, 1024, Some(Duration::from_secs(5))));
        assert_eq!(l.array, ScriptLimits::ANSWER.array);
        assert!(ScriptLimits::LAB.with("ram=1").unwrap_err().contains("not a limit"));
        assert!(ScriptLimits::LAB.with("array=-1").unwrap_err().contains("not a whole number"));
        assert!(ScriptLimits::LAB.with("string").unwrap_err().contains("KEY=VALUE"));
    }
}

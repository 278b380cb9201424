//! A named figure of the relay's `/stats` (`open`, `registered`, `connections.pair`,
//! `messages_out`, …) and a condition on one (`open==0`, `connections.phone>=80`), as
//! the measurement subcommands take them on the command line. Values are read through
//! [`crate::relay_stats`]'s accessors, never by indexing JSON here.

use std::fmt;

use serde_json::Value;

use crate::relay_stats;

/// A figure of `/stats` totals.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Figure {
    /// Connections open now, every kind.
    Open,
    /// Registry entries now, every gauge.
    Registered,
    /// Connections open now of one kind (`pair`, `phone`, `session_browser`, …).
    Connections(String),
    /// A cumulative totals counter (`messages_out`, `accepted`, `rejected`, …).
    Counter(String),
}

impl Figure {
    /// Parses `open`, `registered`, `connections.KIND` or a counter name.
    pub fn parse(text: &str) -> Result<Figure, String> {
        let valid =
            |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        match text {
            "open" => Ok(Figure::Open),
            "registered" => Ok(Figure::Registered),
            _ => match text.strip_prefix("connections.") {
                Some(kind) if valid(kind) => Ok(Figure::Connections(kind.to_owned())),
                None if valid(text) => Ok(Figure::Counter(text.to_owned())),
                _ => Err(format!(
                    "`{text}`: expected open, registered, connections.KIND or a totals counter"
                )),
            },
        }
    }

    /// The figure's value in a `/stats` body; `None` for a counter the relay lacks.
    pub fn of(&self, stats: &Value) -> Option<u64> {
        match self {
            Figure::Open => Some(relay_stats::open_connections(stats)),
            Figure::Registered => Some(relay_stats::registered(stats)),
            Figure::Connections(kind) => Some(relay_stats::connections_of(stats, kind)),
            Figure::Counter(name) => relay_stats::total(stats, name),
        }
    }
}

impl fmt::Display for Figure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Figure::Open => f.write_str("open"),
            Figure::Registered => f.write_str("registered"),
            Figure::Connections(kind) => write!(f, "connections.{kind}"),
            Figure::Counter(name) => f.write_str(name),
        }
    }
}

/// A comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmp {
    /// `==`
    Eq,
    /// `>=`
    AtLeast,
    /// `<=`
    AtMost,
    /// `>`
    Above,
    /// `<`
    Below,
}

impl Cmp {
    /// Whether `left cmp right` holds.
    pub fn holds(self, left: u64, right: u64) -> bool {
        match self {
            Cmp::Eq => left == right,
            Cmp::AtLeast => left >= right,
            Cmp::AtMost => left <= right,
            Cmp::Above => left > right,
            Cmp::Below => left < right,
        }
    }

    /// The operator as written.
    fn symbol(self) -> &'static str {
        match self {
            Cmp::Eq => "==",
            Cmp::AtLeast => ">=",
            Cmp::AtMost => "<=",
            Cmp::Above => ">",
            Cmp::Below => "<",
        }
    }
}

/// `FIGURE OP VALUE`: a condition a `/stats` body meets or not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Condition {
    /// What is compared.
    pub figure: Figure,
    /// How.
    pub cmp: Cmp,
    /// With what.
    pub value: u64,
}

impl Condition {
    /// Parses `open==0`, `connections.phone>=80`, `messages_out>0`.
    pub fn parse(text: &str) -> Result<Condition, String> {
        let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        let at = compact.find(['=', '<', '>']).ok_or_else(|| {
            format!("`{text}`: expected FIGURE==N, FIGURE>=N, FIGURE<=N, FIGURE>N or FIGURE<N")
        })?;
        let (name, rest) = compact.split_at(at);
        let (cmp, value) = [
            ("==", Cmp::Eq),
            (">=", Cmp::AtLeast),
            ("<=", Cmp::AtMost),
            (">", Cmp::Above),
            ("<", Cmp::Below),
        ]
        .into_iter()
        .find_map(|(sym, cmp)| Some((cmp, rest.strip_prefix(sym)?)))
        .ok_or_else(|| format!("`{text}`: unknown operator"))?;
        let value = value
            .parse()
            .map_err(|_| format!("`{text}`: `{value}` is not a whole number"))?;
        Ok(Condition {
            figure: Figure::parse(name)?,
            cmp,
            value,
        })
    }

    /// Whether `stats` meets it (a counter the relay lacks never does).
    pub fn met_by(&self, stats: &Value) -> bool {
        self.figure
            .of(stats)
            .is_some_and(|v| self.cmp.holds(v, self.value))
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}{}", self.figure, self.cmp.symbol(), self.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_parse_and_evaluate_against_stats() {
        let stats = serde_json::json!({"totals":{"messages_out":9,
            "connections":{"pair":200,"phone":79},"gauges":{"pairs_waiting":0}}});
        let met = |t: &str| Condition::parse(t).unwrap().met_by(&stats);
        assert!(met("open==279"));
        assert!(met("registered == 0"));
        assert!(met("connections.pair>=200"));
        assert!(!met("connections.phone>=80"));
        assert!(met("connections.ticket_get<1"));
        assert!(met("messages_out>8") && !met("messages_out>9"));
        assert!(!met("no_such_counter>=0"), "a missing counter never meets");
        assert_eq!(
            Condition::parse("connections.phone >= 80")
                .unwrap()
                .to_string(),
            "connections.phone>=80"
        );
    }

    #[test]
    fn bad_conditions_are_refused() {
        for bad in [
            "open",
            "open=0",
            "open==-1",
            "open==x",
            "connections.==1",
            "a-b>1",
            ">=3",
        ] {
            assert!(Condition::parse(bad).is_err(), "{bad}");
        }
    }
}

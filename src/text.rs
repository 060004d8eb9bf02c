//! How Earshot writes times for people, in the app and on the command line alike.

/// `H:MM:SS.ss`, or `M:SS.ss` under an hour; negative times (a query that starts before the
/// file it matches) keep their sign.
pub fn clock(seconds: f64) -> String {
    let sign = if seconds < 0.0 { "-" } else { "" };
    let total = seconds.abs();
    let hours = (total / 3600.0).floor();
    let minutes = ((total - hours * 3600.0) / 60.0).floor();
    let secs = total - hours * 3600.0 - minutes * 60.0;
    if hours > 0.0 {
        format!("{sign}{hours}:{minutes:02}:{secs:05.2}")
    } else {
        format!("{sign}{minutes}:{secs:05.2}")
    }
}

/// `n` things, in the singular for one: "1 result", "3 results".
pub fn count(n: usize, noun: &str) -> String {
    match n {
        1 => format!("1 {noun}"),
        _ => format!("{n} {noun}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::{clock, count};

    #[test]
    fn one_thing_is_singular() {
        assert_eq!(count(1, "result"), "1 result");
        assert_eq!(count(0, "result"), "0 results");
        assert_eq!(count(12, "file"), "12 files");
    }

    #[test]
    fn times_read_as_clocks_with_hours_when_there_are_any() {
        assert_eq!(clock(0.0), "0:00.00");
        assert_eq!(clock(75.5), "1:15.50");
        assert_eq!(clock(4500.25), "1:15:00.25");
        assert_eq!(clock(-0.18), "-0:00.18");
    }
}

//! Metric names: the ones a PromQL expression uses, and the ones a Prometheus text exposition
//! exports, compared by family (a histogram's `_bucket`, `_sum` and `_count` are its family).

use std::collections::BTreeSet;

/// Prefix of every LogStream metric.
pub const PREFIX: &str = "logstream_";

/// Every `logstream_…` metric name in `expr` (a PromQL expression or any text holding some).
pub fn used_in(expr: &str) -> BTreeSet<String> {
    let bytes = expr.as_bytes();
    let is_name = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b':';
    let mut names = BTreeSet::new();
    let mut at = 0;
    while let Some(found) = expr[at..].find(PREFIX) {
        let start = at + found;
        let mut end = start + PREFIX.len();
        while end < bytes.len() && is_name(bytes[end]) {
            end += 1;
        }
        // A name starts at a boundary: `my_logstream_x` is not ours.
        if start == 0 || !is_name(bytes[start - 1]) {
            names.insert(expr[start..end].to_owned());
        }
        at = end;
    }
    names
}

/// The sample names of a Prometheus text exposition (comments and `# EOF` left out).
pub fn exported_by(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

/// The family of a sample name: without `_bucket`, `_sum` or `_count`.
pub fn family(name: &str) -> &str {
    ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|suffix| name.strip_suffix(suffix))
        .unwrap_or(name)
}

/// The names in `used` whose family nobody in `exported` exports.
pub fn unknown(used: &BTreeSet<String>, exported: &BTreeSet<String>) -> Vec<String> {
    let families: BTreeSet<&str> = exported.iter().map(|n| family(n)).collect();
    used.iter()
        .filter(|n| !families.contains(family(n)) && !exported.contains(*n))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_read_from_promql_at_word_boundaries() {
        let names = used_in(
            "histogram_quantile(0.9, sum by (le) (rate(logstream_processing_seconds_bucket{a=\"logstream_x\"}[5m]))) / my_logstream_y + logstream_in_flight",
        );
        assert_eq!(
            names.into_iter().collect::<Vec<_>>(),
            [
                "logstream_in_flight",
                "logstream_processing_seconds_bucket",
                "logstream_x"
            ]
        );
    }

    #[test]
    fn histogram_samples_count_as_their_family_and_unknown_names_are_reported() {
        let exported = exported_by(
            "# TYPE logstream_h histogram\nlogstream_h_bucket{le=\"1\"} 0\nlogstream_h_sum 0\nlogstream_h_count 0\nlogstream_c_total{pipeline=\"p\"} 3\n# EOF\n",
        );
        let used: BTreeSet<String> = [
            "logstream_h_bucket",
            "logstream_h_count",
            "logstream_c_total",
            "logstream_c",
            "logstream_missing_total",
        ]
        .into_iter()
        .map(str::to_owned)
        .collect();
        assert_eq!(
            unknown(&used, &exported),
            ["logstream_c", "logstream_missing_total"]
        );
    }
}

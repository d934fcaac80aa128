//! The matching rules of CRI's list filters, written once for every List
//! call: an empty field matches everything, ids match by prefix (crictl
//! passes truncated ids), and a label selector matches when every one of
//! its pairs is among the object's labels.

use std::collections::{BTreeMap, HashMap};

/// An id filter: empty, or a prefix of `id`.
pub fn id_matches(wanted: &str, id: &str) -> bool {
    wanted.is_empty() || id.starts_with(wanted)
}

/// Every `key=value` of the selector is among the labels.
pub fn labels_match<L: LabelLookup>(selector: &HashMap<String, String>, labels: &L) -> bool {
    selector.iter().all(|(k, v)| labels.label(k) == Some(v))
}

/// Labels as records (BTreeMap) and CRI messages (HashMap) hold them.
pub trait LabelLookup {
    fn label(&self, key: &str) -> Option<&String>;
}

impl LabelLookup for BTreeMap<String, String> {
    fn label(&self, key: &str) -> Option<&String> {
        self.get(key)
    }
}

impl LabelLookup for HashMap<String, String> {
    fn label(&self, key: &str) -> Option<&String> {
        self.get(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_filters_match_everything_and_pairs_must_all_match() {
        assert!(id_matches("", "abc"));
        assert!(id_matches("ab", "abc"));
        assert!(!id_matches("abd", "abc"));
        let labels: BTreeMap<String, String> = [("app", "web"), ("tier", "front")]
            .map(|(k, v)| (k.into(), v.into()))
            .into();
        let selector = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert!(labels_match(&selector(&[]), &labels));
        assert!(labels_match(&selector(&[("app", "web")]), &labels));
        assert!(!labels_match(
            &selector(&[("app", "web"), ("tier", "back")]),
            &labels
        ));
        assert!(!labels_match(&selector(&[("missing", "")]), &labels));
    }
}

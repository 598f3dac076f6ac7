//! Small helpers over prometheus-client's encoder: families of gauges and counters from
//! (labels, value) pairs, with label values escaped.

use std::fmt::{Result, Write};

use prometheus_client::encoding::{
    DescriptorEncoder, EncodeCounterValue, EncodeGaugeValue, EncodeLabelValue, LabelValueEncoder,
    NoLabelSet,
};
use prometheus_client::metrics::MetricType;

/// A label value, escaped as the exposition format requires. prometheus-client writes label
/// values as they are, and stream names may hold `"` or `\`: unescaped, one stream could
/// break every scrape.
#[derive(Debug, Clone)]
pub(crate) struct Label(pub String);

impl EncodeLabelValue for Label {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result {
        for c in self.0.chars() {
            match c {
                '\\' => encoder.write_str("\\\\")?,
                '"' => encoder.write_str("\\\"")?,
                '\n' => encoder.write_str("\\n")?,
                c => encoder.write_char(c)?,
            }
        }
        Ok(())
    }
}

pub(crate) fn label(s: &str) -> Label {
    Label(s.to_owned())
}

pub(crate) type Labels = Vec<(&'static str, Label)>;

pub(crate) fn gauge<V: EncodeGaugeValue>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: &[(Labels, V)],
) -> Result {
    let mut family = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in samples {
        if labels.is_empty() {
            family.encode_gauge(value)?;
        } else {
            family.encode_family(labels)?.encode_gauge(value)?;
        }
    }
    Ok(())
}

/// A counter family; `name` without `_total`, which the encoder appends.
pub(crate) fn counter<V: EncodeCounterValue>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: &[(Labels, V)],
) -> Result {
    let mut family = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in samples {
        if labels.is_empty() {
            family.encode_counter::<NoLabelSet, _, u64>(value, None)?;
        } else {
            family
                .encode_family(labels)?
                .encode_counter::<NoLabelSet, _, u64>(value, None)?;
        }
    }
    Ok(())
}

/// One sample without labels.
pub(crate) fn one<V>(value: V) -> [(Labels, V); 1] {
    [(Vec::new(), value)]
}

/// An info family (`<name>_info{…} 1`), as RabbitMQ's identity and build info.
pub(crate) fn info(enc: &mut DescriptorEncoder, name: &str, help: &str, labels: &Labels) -> Result {
    enc.encode_descriptor(name, help, None, MetricType::Info)?
        .encode_info(labels)
}

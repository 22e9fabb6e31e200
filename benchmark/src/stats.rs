//! Summary statistics over the runs of one row.

use serde::{Deserialize, Serialize};

use crate::BenchError;

/// min / max / mean / standard deviation / median of a set of samples.
///
/// The standard deviation is the sample one (divisor `n - 1`; 0 for a single
/// sample); the median of an even count is the mean of the middle two.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Number of samples.
    pub n: usize,
    /// Smallest sample.
    pub min: f64,
    /// Largest sample.
    pub max: f64,
    /// Arithmetic mean.
    pub avg: f64,
    /// Sample standard deviation.
    pub stddev: f64,
    /// Median.
    pub median: f64,
}

impl Summary {
    /// Summarises `samples`; an error for no samples or a non-finite one.
    pub fn of(samples: &[f64]) -> Result<Summary, BenchError> {
        if samples.is_empty() {
            return Err(BenchError::NoSamples);
        }
        if let Some((index, &value)) = samples.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(BenchError::NonFiniteSample { index, value });
        }
        let n = samples.len();
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let avg = sorted.iter().sum::<f64>() / n as f64;
        let var = if n > 1 {
            sorted.iter().map(|x| (x - avg) * (x - avg)).sum::<f64>() / (n - 1) as f64
        } else {
            0.0
        };
        let median = if n % 2 == 1 {
            sorted[n / 2]
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
        };
        Ok(Summary {
            n,
            min: sorted[0],
            max: sorted[n - 1],
            avg,
            stddev: var.sqrt(),
            median,
        })
    }
}

/// Geometric mean of positive values (`None` when empty or any is not > 0).
pub fn geomean(values: &[f64]) -> Option<f64> {
    if values.is_empty()
        || values
            .iter()
            .any(|v| v.is_nan() || *v <= 0.0 || v.is_infinite())
    {
        return None;
    }
    Some((values.iter().map(|v| v.ln()).sum::<f64>() / values.len() as f64).exp())
}

//! Running statistics in constant memory (Welford's method), so a flow's state does
//! not grow with its packet count (the original kept every length and timestamp).

/// Count, sum, min, max, mean and variance of a stream of values.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RunningStats {
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
    mean: f64,
    m2: f64,
}

impl RunningStats {
    pub fn add(&mut self, value: f64) {
        if self.count == 0 {
            self.min = value;
            self.max = value;
        } else {
            self.min = self.min.min(value);
            self.max = self.max.max(value);
        }
        self.count += 1;
        self.sum += value;
        let delta = value - self.mean;
        self.mean += delta / self.count as f64;
        self.m2 += delta * (value - self.mean);
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn sum(&self) -> f64 {
        self.sum
    }

    /// Smallest value, 0 when empty.
    pub fn min(&self) -> f64 {
        self.min
    }

    /// Largest value, 0 when empty.
    pub fn max(&self) -> f64 {
        self.max
    }

    /// Mean, 0 when empty.
    pub fn mean(&self) -> f64 {
        self.mean
    }

    /// Sample variance (n − 1 denominator), 0 with fewer than two values.
    pub fn variance(&self) -> f64 {
        if self.count < 2 {
            0.0
        } else {
            (self.m2 / (self.count - 1) as f64).max(0.0)
        }
    }

    /// Sample standard deviation, 0 with fewer than two values.
    pub fn std_dev(&self) -> f64 {
        self.variance().sqrt()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_hand_computed_values() {
        let mut stats = RunningStats::default();
        for value in [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0] {
            stats.add(value);
        }
        assert_eq!(stats.count(), 8);
        assert_eq!(stats.sum(), 40.0);
        assert_eq!((stats.min(), stats.max(), stats.mean()), (2.0, 9.0, 5.0));
        // Sum of squared deviations is 32; sample variance 32 / 7.
        assert!((stats.variance() - 32.0 / 7.0).abs() < 1e-12);
    }

    #[test]
    fn empty_and_single_value_are_zero_spread() {
        let mut stats = RunningStats::default();
        assert_eq!((stats.min(), stats.max(), stats.mean(), stats.std_dev()), (0.0, 0.0, 0.0, 0.0));
        stats.add(-3.0);
        assert_eq!((stats.min(), stats.max(), stats.std_dev()), (-3.0, -3.0, 0.0));
    }
}

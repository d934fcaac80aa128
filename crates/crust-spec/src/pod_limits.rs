//! The pod-level cgroup limits of UpdatePodSandboxResources (in-place pod
//! resize): the pod's resources (the sum of its containers', as kubelet
//! computes it) plus the sandbox overhead (RuntimeClass `overhead`).

use crust_cri_api::v1::LinuxContainerResources;

use crate::SpecError;

/// The CFS period when a request names none (the kernel's default).
const DEFAULT_CPU_PERIOD: u64 = 100_000;
/// The kernel's bounds on `cpu.cfs_period_us` / `cpu.max`'s period.
const CPU_PERIOD_RANGE: std::ops::RangeInclusive<u64> = 1_000..=1_000_000;

/// What crust writes to a pod's cgroup. `None` memory or quota means
/// unlimited; `None` shares leaves the weight as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodLimits {
    pub memory_limit: Option<u64>,
    /// CFS quota per `cpu_period`, in microseconds.
    pub cpu_quota: Option<u64>,
    pub cpu_period: u64,
    pub cpu_shares: Option<u64>,
}

impl PodLimits {
    /// The CPU limit in millicores (quota / period), for comparing a pod's
    /// limit with its containers' whatever period each uses.
    pub fn cpu_millis(&self) -> Option<u64> {
        self.cpu_quota
            .map(|q| q.saturating_mul(1000) / self.cpu_period.max(1))
    }
}

/// A container's (or a pod's) CPU limit in millicores; None: unlimited.
pub fn cpu_millis(r: &LinuxContainerResources) -> Option<u64> {
    let period = if r.cpu_period > 0 {
        r.cpu_period as u64
    } else {
        DEFAULT_CPU_PERIOD
    };
    (r.cpu_quota > 0).then(|| (r.cpu_quota as u64).saturating_mul(1000) / period)
}

/// A container's memory limit; None: unlimited.
pub fn memory_limit(r: &LinuxContainerResources) -> Option<u64> {
    (r.memory_limit_in_bytes > 0).then_some(r.memory_limit_in_bytes as u64)
}

/// The pod cgroup's limits for `resources` plus `overhead`. Only CPU and
/// memory apply at pod level: cpusets, hugepages and `unified` keys are
/// refused rather than dropped, so a caller never believes they were set.
pub fn pod_limits(
    resources: Option<&LinuxContainerResources>,
    overhead: Option<&LinuxContainerResources>,
) -> Result<PodLimits, SpecError> {
    let Some(resources) = resources.or(overhead) else {
        return Err(SpecError::invalid(
            "resources",
            "",
            "UpdatePodSandboxResources needs resources or overhead",
        ));
    };
    let parts: Vec<(&str, &LinuxContainerResources)> = [("resources", Some(resources))]
        .into_iter()
        .chain([(
            "overhead",
            overhead.filter(|o| !std::ptr::eq(*o, resources)),
        )])
        .filter_map(|(name, r)| r.map(|r| (name, r)))
        .collect();
    for (name, r) in &parts {
        crate::check_container_resources(r)?;
        if !r.cpuset_cpus.is_empty() || !r.cpuset_mems.is_empty() {
            return Err(SpecError::invalid(
                format!("{name} cpuset"),
                format!("{}/{}", r.cpuset_cpus, r.cpuset_mems),
                "cpusets are not set at pod level; set them on containers",
            ));
        }
        if !r.hugepage_limits.is_empty() || !r.unified.is_empty() {
            return Err(SpecError::invalid(
                format!("{name} hugepage_limits/unified"),
                "",
                "only cpu and memory limits are set at pod level",
            ));
        }
        if r.cpu_quota < -1 {
            return Err(SpecError::invalid(
                format!("{name} cpu_quota"),
                r.cpu_quota.to_string(),
                "must be -1 (unlimited), 0 (unset) or positive microseconds",
            ));
        }
        if r.cpu_period != 0 && !CPU_PERIOD_RANGE.contains(&(r.cpu_period as u64)) {
            return Err(SpecError::invalid(
                format!("{name} cpu_period"),
                r.cpu_period.to_string(),
                "must be between 1000 and 1000000 microseconds",
            ));
        }
    }

    let cpu_period = if resources.cpu_period > 0 {
        resources.cpu_period as u64
    } else {
        DEFAULT_CPU_PERIOD
    };
    // The sum of the parts; one unlimited part makes the whole unlimited.
    let mut memory = Some(0u64);
    let mut quota = Some(0u64);
    let mut shares = 0u64;
    for (_, r) in &parts {
        memory = memory
            .zip(memory_limit(r))
            .map(|(a, b)| a.saturating_add(b));
        quota = quota
            .zip(cpu_millis(r))
            .map(|(a, millis)| a.saturating_add(millis.saturating_mul(cpu_period) / 1000));
        shares = shares.saturating_add(r.cpu_shares.max(0) as u64);
    }
    Ok(PodLimits {
        memory_limit: memory,
        cpu_quota: quota,
        cpu_period,
        cpu_shares: (shares > 0).then_some(shares.clamp(2, 262_144)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(memory: i64, quota: i64, period: i64, shares: i64) -> LinuxContainerResources {
        LinuxContainerResources {
            memory_limit_in_bytes: memory,
            cpu_quota: quota,
            cpu_period: period,
            cpu_shares: shares,
            ..Default::default()
        }
    }

    #[test]
    fn resources_and_overhead_add_up() {
        let limits = pod_limits(
            Some(&res(256 << 20, 50_000, 100_000, 512)),
            Some(&res(32 << 20, 10_000, 50_000, 2)),
        )
        .unwrap();
        assert_eq!(limits.memory_limit, Some(288 << 20));
        // 500m + 200m (10ms per 50ms), expressed per the pod's 100ms period
        assert_eq!(limits.cpu_quota, Some(70_000));
        assert_eq!(limits.cpu_period, 100_000);
        assert_eq!(limits.cpu_millis(), Some(700));
        assert_eq!(limits.cpu_shares, Some(514));
    }

    #[test]
    fn an_unlimited_part_leaves_the_pod_unlimited() {
        let limits = pod_limits(Some(&res(0, 0, 0, 0)), Some(&res(1 << 20, 1000, 0, 0))).unwrap();
        assert_eq!(limits.memory_limit, None);
        assert_eq!(limits.cpu_quota, None);
        assert_eq!(limits.cpu_shares, None);
        assert_eq!(limits.cpu_period, DEFAULT_CPU_PERIOD);
    }

    #[test]
    fn overhead_alone_is_a_limit() {
        let limits = pod_limits(None, Some(&res(64 << 20, 0, 0, 0))).unwrap();
        assert_eq!(limits.memory_limit, Some(64 << 20));
    }

    #[test]
    fn nonsense_is_refused_naming_the_field() {
        let cases = [
            (res(-5, 0, 0, 0), "memory_limit_in_bytes"),
            (res(0, -7, 0, 0), "cpu_quota"),
            (res(0, 1000, 10, 0), "cpu_period"),
            (res(0, 0, 0, -3), "cpu_shares"),
            (
                LinuxContainerResources {
                    cpuset_cpus: "0".into(),
                    ..Default::default()
                },
                "cpuset",
            ),
        ];
        for (r, field) in cases {
            let err = pod_limits(Some(&r), None).unwrap_err().to_string();
            assert!(err.contains(field), "{field}: {err}");
        }
        assert!(pod_limits(None, None).is_err());
    }
}

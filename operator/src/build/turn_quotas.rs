//! coturn's allocation and bandwidth limits from `turn.quotas`.

use crate::crd::OtterDeployment;

/// `--user-quota`, `--total-quota`, `--max-bps`, `--bps-capacity`, always written out (0 is
/// coturn's "no limit"), so the DaemonSet shows the limits each coturn runs with.
pub fn quota_args(cr: &OtterDeployment) -> Vec<String> {
    let q = &cr.spec.turn.quotas;
    vec![
        format!("--user-quota={}", q.allocations_per_user),
        format!("--total-quota={}", q.allocations_total),
        format!("--max-bps={}", q.session_bytes_per_second),
        format!("--bps-capacity={}", q.total_bytes_per_second),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::turn::coturn_args;
    use crate::testing::cr;

    #[test]
    fn defaults_protect_a_node() {
        let args = coturn_args(&cr()).unwrap();
        for want in [
            "--user-quota=50",
            "--total-quota=4000",
            "--max-bps=1250000",
            "--bps-capacity=0",
        ] {
            assert!(args.contains(&want.to_string()), "{want} in {args:?}");
        }
    }

    #[test]
    fn the_spec_sets_each_limit() {
        let mut cr = cr();
        cr.spec.turn.quotas.allocations_per_user = 1;
        cr.spec.turn.quotas.allocations_total = 10;
        cr.spec.turn.quotas.session_bytes_per_second = 64_000;
        cr.spec.turn.quotas.total_bytes_per_second = 640_000;
        assert_eq!(
            quota_args(&cr),
            [
                "--user-quota=1",
                "--total-quota=10",
                "--max-bps=64000",
                "--bps-capacity=640000"
            ]
        );
    }
}

//! Human tables: one run on the terminal, and the markdown tables of docs/benchmarks.md from a
//! directory of JSON reports.

use std::fmt::Write;

use crate::run::Report;

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// A terminal summary of one run.
pub fn human(r: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{} {} ({}): {} peers in rooms of {}, {} connected in {:.2}s",
        r.group, r.server, r.protocol, r.peers, r.room_size, r.connected, r.join_s
    );
    let _ = writeln!(
        s,
        "  {:<6} {:>8} {:>10} {:>10} {:>10} {:>10}",
        "", "count", "p50 ms", "p99 ms", "p99.9 ms", "max ms"
    );
    for (name, p) in [("join", &r.join), ("relay", &r.relay)] {
        let _ = writeln!(
            s,
            "  {:<6} {:>8} {:>10.3} {:>10.3} {:>10.3} {:>10.3}",
            name, p.count, p.p50_ms, p.p99_ms, p.p999_ms, p.max_ms
        );
    }
    let _ = writeln!(
        s,
        "  messages: {}/{} received in {:.2}s = {:.0}/s; errors {}; server CPU {:.1} µs/message",
        r.received_messages,
        r.expected_messages,
        r.exchange_s,
        r.messages_per_s,
        r.errors,
        r.cpu_us_per_message
    );
    let _ = writeln!(
        s,
        "  {:<14} {:>8} {:>11} {:>11} {:>11} {:>10} {:>10}",
        "process", "pid", "RSS0 MiB", "RSS MiB", "KiB/conn", "CPU s", "exch CPU s"
    );
    for p in r.procs.iter().chain(std::iter::once(&r.total)) {
        let _ = writeln!(
            s,
            "  {:<14} {:>8} {:>11.1} {:>11.1} {:>11.2} {:>10.2} {:>10.2}",
            p.name,
            p.pid,
            mib(p.before.rss_kib),
            mib(p.joined.rss_kib),
            p.kib_per_conn,
            p.total_cpu_s,
            p.exchange_cpu_s
        );
    }
    let _ = writeln!(
        s,
        "  load average {:.2} -> {:.2}; machine busy during exchange {:.0}%",
        r.loadavg_before,
        r.loadavg_after,
        r.machine_busy_exchange * 100.0
    );
    for e in &r.error_samples {
        let _ = writeln!(s, "  error: {e}");
    }
    s
}

/// One report per row of the tables: runs of the same load, repeated by `tests/bench/run
/// --repeat`, become the run with the median CPU per message, its figures kept together (they
/// come from one run), with every run's CPU in `cpu_runs`; rows in the order of their first
/// run. A single CPU figure of a short exchange moves by ±20% from run to run on a shared
/// machine, more than the margins the ratios are judged by.
pub fn medians(reports: &[Report]) -> Vec<Report> {
    let mut rows: Vec<Vec<&Report>> = Vec::new();
    for r in reports {
        match rows
            .iter_mut()
            .find(|row| row.first().is_some_and(|o| load_of(o) == load_of(r)))
        {
            Some(row) => row.push(r),
            None => rows.push(vec![r]),
        }
    }
    rows.into_iter().filter_map(median_of).collect()
}

/// What makes runs the same load: group, server, peers, room size.
fn load_of(r: &Report) -> (&str, &str, usize, usize) {
    (&r.group, &r.server, r.peers, r.room_size)
}

/// The run with the median CPU per message (the lower one of an even count). Its errors are
/// those of every run: an error in any run shows in the row.
fn median_of(mut runs: Vec<&Report>) -> Option<Report> {
    runs.sort_by(|a, b| a.cpu_us_per_message.total_cmp(&b.cpu_us_per_message));
    let mid = runs.len().saturating_sub(1) / 2;
    let mut median = (*runs.get(mid)?).clone();
    if runs.len() > 1 {
        median.cpu_runs = runs.iter().map(|r| r.cpu_us_per_message).collect();
        median.errors = runs.iter().map(|r| r.errors).sum();
        median.error_samples = runs.iter().flat_map(|r| r.error_samples.clone()).collect();
    }
    Some(median)
}

/// The CPU cell: the figure, and the range of the runs it is the median of.
fn cpu_cell(r: &Report) -> String {
    match (r.cpu_runs.first(), r.cpu_runs.last()) {
        (Some(lo), Some(hi)) if r.cpu_runs.len() > 1 => {
            format!("{:.1} ({lo:.1}–{hi:.1})", r.cpu_us_per_message)
        }
        _ => format!("{:.1}", r.cpu_us_per_message),
    }
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 && a.is_finite() && b.is_finite() {
        format!("{:.2}×", a / b)
    } else {
        "n/a".into()
    }
}

/// The side-by-side, ratio and per-process tables of one group of runs.
fn side_by_side(s: &mut String, reports: &[Report], group: &str, title: &str) {
    let compare: Vec<&Report> = reports.iter().filter(|r| r.group == group).collect();
    let mut ks: Vec<usize> = compare.iter().map(|r| r.room_size).collect();
    ks.sort();
    ks.dedup();
    if !compare.is_empty() {
        let _ = writeln!(
            s,
            "\n### {title}\n\n\
             Join = TCP connect to `joined` (PeerJS: `OPEN`). Relay = send to receive of each \
             offer/answer/candidate. CPU and memory are the server side (for Redis mode: the three \
             replicas plus redis-server). KiB/conn = (RSS with every peer joined − RSS idle) / peers.\n"
        );
        let _ = writeln!(
            s,
            "| k | server | peers | join p50 / p99 / p99.9 ms | relay p50 / p99 / p99.9 ms | msgs/s | CPU µs/msg | KiB/conn | errors |\n\
             |---|---|---|---|---|---|---|---|---|"
        );
        for k in &ks {
            for r in compare.iter().filter(|r| r.room_size == *k) {
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {:.2} / {:.2} / {:.2} | {:.2} / {:.2} / {:.2} | {:.0} | {} | {:.1} | {} |",
                    r.room_size,
                    r.server,
                    r.peers,
                    r.join.p50_ms,
                    r.join.p99_ms,
                    r.join.p999_ms,
                    r.relay.p50_ms,
                    r.relay.p99_ms,
                    r.relay.p999_ms,
                    r.messages_per_s,
                    cpu_cell(r),
                    r.total.kib_per_conn,
                    r.errors
                );
            }
        }
        let _ = writeln!(
            s,
            "\n### Ratios ({group}): the other server's figure divided by Otter's (in-memory store)\n\n\
             Above 1× means Otter is better for latency, CPU and memory; below 1× means Otter is better for msgs/s.\n"
        );
        let _ = writeln!(
            s,
            "| k | server | join p99 | relay p50 | relay p99 | msgs/s | CPU µs/msg | KiB/conn |\n\
             |---|---|---|---|---|---|---|---|"
        );
        for k in &ks {
            let Some(base) = compare
                .iter()
                .find(|r| r.room_size == *k && r.server == "otter-memory")
            else {
                continue;
            };
            for r in compare
                .iter()
                .filter(|r| r.room_size == *k && r.server != "otter-memory")
            {
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {} | {} | {} | {} |",
                    k,
                    r.server,
                    ratio(r.join.p99_ms, base.join.p99_ms),
                    ratio(r.relay.p50_ms, base.relay.p50_ms),
                    ratio(r.relay.p99_ms, base.relay.p99_ms),
                    ratio(r.messages_per_s, base.messages_per_s),
                    ratio(r.cpu_us_per_message, base.cpu_us_per_message),
                    ratio(r.total.kib_per_conn, base.total.kib_per_conn),
                );
            }
        }
        per_process(s, &compare, group);
    }
}

/// Each process of the multi-process setups (Redis mode) in one group of runs.
fn per_process(s: &mut String, compare: &[&Report], group: &str) {
    let multi: Vec<&&Report> = compare.iter().filter(|r| r.procs.len() > 1).collect();
    if multi.is_empty() {
        return;
    }
    let _ = writeln!(
        s,
        "\n### Redis mode, per process ({group})\n\n\
         | k | process | RSS idle MiB | RSS joined MiB | KiB/conn | CPU s (whole run) | CPU s (exchange) |\n\
         |---|---|---|---|---|---|---|"
    );
    for r in multi {
        for p in r.procs.iter().chain(std::iter::once(&r.total)) {
            let _ = writeln!(
                s,
                "| {} | {} | {:.1} | {:.1} | {:.2} | {:.2} | {:.2} |",
                r.room_size,
                p.name,
                mib(p.before.rss_kib),
                mib(p.joined.rss_kib),
                p.kib_per_conn,
                p.total_cpu_s,
                p.exchange_cpu_s
            );
        }
    }
}

/// The markdown tables for docs/benchmarks.md, one row per load (the median of its runs).
pub fn markdown(runs: &[Report]) -> String {
    let rows = medians(runs);
    let reports = rows.as_slice();
    let mut s = String::new();
    if rows.iter().any(|r| !r.cpu_runs.is_empty()) {
        let _ = writeln!(
            s,
            "\nEach row is one run: of the runs of the same load (each with its setup started \
             fresh, interleaved with the other setups' runs), the one with the median CPU per \
             message; its CPU cell gives the lowest and highest of them in parentheses, and its \
             errors are those of all of them."
        );
    }
    side_by_side(&mut s, reports, "compare", "Side by side");
    side_by_side(
        &mut s,
        reports,
        "pinned",
        "Side by side, pinned: every server process on CPU 0, the generator on CPU 1 (`taskset`)",
    );
    let scale: Vec<&Report> = reports.iter().filter(|r| r.group == "scale").collect();
    if !scale.is_empty() {
        let _ = writeln!(
            s,
            "\n### Scale: concurrent connections and memory per connection\n\n\
             | connections | server | k | connected | RSS idle MiB | RSS joined MiB | KiB/conn | join p99 ms | relay p99 ms | msgs/s | CPU µs/msg | errors |\n\
             |---|---|---|---|---|---|---|---|---|---|---|---|"
        );
        let mut sorted = scale.clone();
        sorted.sort_by(|a, b| a.peers.cmp(&b.peers).then(a.server.cmp(&b.server)));
        for r in sorted {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {:.1} | {:.1} | {:.2} | {:.2} | {:.2} | {:.0} | {} | {} |",
                r.peers,
                r.server,
                r.room_size,
                r.connected,
                mib(r.total.before.rss_kib),
                mib(r.total.joined.rss_kib),
                r.total.kib_per_conn,
                r.join.p99_ms,
                r.relay.p99_ms,
                r.messages_per_s,
                cpu_cell(r),
                r.errors
            );
        }
    }
    machine_note(&mut s, runs);
    s
}

/// How busy the machine was, and every run's errors.
fn machine_note(s: &mut String, runs: &[Report]) {
    if runs.is_empty() {
        return;
    }
    let range = |f: fn(&Report) -> f64| {
        let lo = runs.iter().map(f).fold(f64::INFINITY, f64::min);
        let hi = runs.iter().map(f).fold(0.0, f64::max);
        (lo, hi)
    };
    let (load_lo, load_hi) = range(|r| r.loadavg_before);
    let (busy_lo, busy_hi) = range(|r| r.machine_busy_exchange);
    let _ = writeln!(
        s,
        "\nHow busy the machine was: 1-minute load average at the start of the {} runs \
         {load_lo:.1}–{load_hi:.1}; the whole machine's CPU was {:.0}–{:.0}% busy during the \
         exchange phases (generator, servers and the other engineers' builds together).",
        runs.len(),
        busy_lo * 100.0,
        busy_hi * 100.0
    );
    let errors: Vec<String> = runs
        .iter()
        .filter(|r| r.errors > 0)
        .map(|r| {
            format!(
                "{} {} N={} k={}: {}",
                r.group,
                r.server,
                r.peers,
                r.room_size,
                r.error_samples.first().cloned().unwrap_or_default()
            )
        })
        .collect();
    if !errors.is_empty() {
        let _ = writeln!(s, "\nRuns with errors (first error of each):\n");
        for e in errors {
            let _ = writeln!(s, "- {}", e.replace('|', "\\|"));
        }
    }
}

/// Data for the charts (`tests/bench/charts.gp`): file name and tab-separated rows.
/// `scale-SERVER.tsv`: connections, KiB/conn, RSS joined MiB, CPU µs/msg;
/// `relay-kK.tsv`: server, relay p50, p99, p99.9 ms (side by side, unpinned);
/// `cpu.tsv`: server, CPU µs/msg at k=2 and k=6 unpinned, then pinned (0 when not run).
pub fn chart_data(runs: &[Report]) -> Vec<(String, String)> {
    let rows = medians(runs);
    let reports = rows.as_slice();
    let mut files = Vec::new();
    let mut servers: Vec<&str> = reports.iter().map(|r| r.server.as_str()).collect();
    servers.sort_unstable();
    servers.dedup();
    for server in &servers {
        let mut rows: Vec<&Report> = reports
            .iter()
            .filter(|r| r.group == "scale" && r.server == *server)
            .collect();
        if rows.is_empty() {
            continue;
        }
        rows.sort_by_key(|r| r.peers);
        let mut t = String::from("# connections\tKiB/conn\tRSS joined MiB\tCPU us/msg\n");
        for r in rows {
            let _ = writeln!(
                t,
                "{}\t{:.2}\t{:.1}\t{:.2}",
                r.connected,
                r.total.kib_per_conn,
                mib(r.total.joined.rss_kib),
                r.cpu_us_per_message
            );
        }
        files.push((format!("scale-{server}.tsv"), t));
    }
    let find = |group: &str, server: &str, k: usize| {
        reports
            .iter()
            .find(|r| r.group == group && r.server == server && r.room_size == k)
    };
    for k in [2, 6] {
        let mut t = String::from("# server\tp50 ms\tp99 ms\tp99.9 ms\n");
        for server in &servers {
            if let Some(r) = find("compare", server, k) {
                let p = &r.relay;
                let _ = writeln!(
                    t,
                    "{server}\t{:.2}\t{:.2}\t{:.2}",
                    p.p50_ms, p.p99_ms, p.p999_ms
                );
            }
        }
        files.push((format!("relay-k{k}.tsv"), t));
    }
    let mut t = String::from("# server\tk=2\tk=6\tk=2 pinned\tk=6 pinned\n");
    for server in &servers {
        let cpu = |g: &str, k: usize| find(g, server, k).map_or(0.0, |r| r.cpu_us_per_message);
        let _ = writeln!(
            t,
            "{server}\t{:.2}\t{:.2}\t{:.2}\t{:.2}",
            cpu("compare", 2),
            cpu("compare", 6),
            cpu("pinned", 2),
            cpu("pinned", 6)
        );
    }
    files.push(("cpu.tsv".to_owned(), t));
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(server: &str, k: usize, cpu: f64, errors: usize) -> Report {
        Report {
            group: "compare".into(),
            server: server.into(),
            peers: 100,
            room_size: k,
            cpu_us_per_message: cpu,
            errors,
            error_samples: (0..errors).map(|i| format!("{server} error {i}")).collect(),
            ..Report::default()
        }
    }

    #[test]
    fn repeated_runs_become_their_median_run_with_every_error() {
        let runs = [
            run("otter-memory", 2, 5.0, 0),
            run("peerjs", 2, 20.0, 0),
            run("otter-memory", 2, 3.0, 1),
            run("otter-memory", 6, 2.0, 0),
            run("otter-memory", 2, 4.0, 0),
        ];
        let rows = medians(&runs);
        let shape: Vec<(&str, usize, f64)> = rows
            .iter()
            .map(|r| (r.server.as_str(), r.room_size, r.cpu_us_per_message))
            .collect();
        assert_eq!(
            shape,
            [
                ("otter-memory", 2, 4.0),
                ("peerjs", 2, 20.0),
                ("otter-memory", 6, 2.0)
            ],
            "one row per load, in the order of its first run"
        );
        assert_eq!(rows[0].cpu_runs, [3.0, 4.0, 5.0]);
        assert_eq!(
            rows[0].errors, 1,
            "the error of a run that is not the median counts"
        );
        assert_eq!(rows[0].error_samples, ["otter-memory error 0"]);
        assert!(rows[1].cpu_runs.is_empty(), "a single run has no range");
        assert_eq!(cpu_cell(&rows[0]), "4.0 (3.0–5.0)");
        assert_eq!(cpu_cell(&rows[1]), "20.0");
    }

    #[test]
    fn an_even_count_takes_the_lower_median() {
        let runs = [run("peerjs", 2, 9.0, 0), run("peerjs", 2, 7.0, 0)];
        assert_eq!(medians(&runs)[0].cpu_us_per_message, 7.0);
    }

    #[test]
    fn the_tables_show_the_median_and_the_note_counts_every_run() {
        let runs = [
            run("otter-memory", 2, 5.0, 0),
            run("otter-memory", 2, 3.0, 2),
            run("otter-memory", 2, 4.0, 0),
        ];
        let md = markdown(&runs);
        assert!(md.contains("| 4.0 (3.0–5.0) |"), "{md}");
        assert!(md.contains("at the start of the 3 runs"), "{md}");
        assert!(
            md.contains("- compare otter-memory N=100 k=2: otter-memory error 0"),
            "{md}"
        );
    }
}

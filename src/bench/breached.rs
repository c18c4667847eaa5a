//! `passback bench --breached N`: the offline breached-password file, measured on a generated
//! corpus of N random SHA-1 hashes in the downloadable corpus's format (hash order,
//! `<hash>:<count>` lines). It prints what the build took, the file's size, how long a lookup
//! takes (from the file, with the operating system's cache warm and cold being the machine's
//! affair), and how many of a million passwords not in the corpus were found by chance; then
//! what the full corpus (about 930 million hashes) would take, extrapolated.

use anyhow::Context;
use rand::RngCore;
use std::io::Write;
use std::time::Instant;

/// The full corpus's size, for the extrapolation (Pwned Passwords, 2024–2026: about 930 million).
const FULL_CORPUS: f64 = 930_000_000.0;
const LOOKUPS: usize = 100_000;
const STRANGERS: usize = 1_000_000;

pub fn run(hashes: u64) -> anyhow::Result<()> {
    let dir = super::out_dir().join("breached");
    std::fs::create_dir_all(&dir)?;
    let corpus = dir.join("corpus.txt");
    eprintln!("bench: writing a corpus of {hashes} random hashes…");
    // Written in hash order as they are drawn (each in its own slice of the space), so that the
    // bench holds none of them but the ones it looks up later.
    let mut rng = rand::rngs::OsRng;
    let slot = u64::MAX / hashes.max(1);
    let step = (hashes / LOOKUPS as u64).max(1);
    let mut listed: Vec<[u8; 20]> = Vec::with_capacity(LOOKUPS);
    {
        let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&corpus)?);
        for i in 0..hashes {
            let mut h = [0_u8; 20];
            rng.fill_bytes(&mut h);
            h[..8].copy_from_slice(&(i * slot + rng.next_u64() % slot).to_be_bytes());
            writeln!(out, "{}:{}", hex::encode_upper(h), 1 + i % 1000)?;
            if i % step == 0 && listed.len() < LOOKUPS {
                listed.push(h);
            }
        }
        out.flush()?;
    }
    let corpus_bytes = std::fs::metadata(&corpus)?.len();

    eprintln!("bench: building the lookup file…");
    let file = dir.join("breached.bin");
    let started = Instant::now();
    let built = crate::breached::build_from_file(&corpus, &file).context("building")?;
    let build_secs = started.elapsed().as_secs_f64();
    let peak_rss = peak_rss_mib();

    let lookup = crate::breached::OfflineFile::open(&file)?;
    let started = Instant::now();
    let mut found = 0;
    for k in &listed {
        found += usize::from(lookup.contains(k)?);
    }
    let lookup_us = started.elapsed().as_secs_f64() * 1e6 / listed.len().max(1) as f64;
    let mut chance = 0;
    for _ in 0..STRANGERS {
        let mut h = [0_u8; 20];
        rng.fill_bytes(&mut h);
        chance += usize::from(lookup.contains(&h)?);
    }

    let scale = FULL_CORPUS / hashes as f64;
    println!("\npassback bench --breached {hashes} (the offline breached-password file)\n");
    println!("corpus             {hashes} hashes, {:.0} MiB of text", corpus_bytes as f64 / 1048576.0);
    println!(
        "build              {build_secs:.1} s, {:.2} million hashes/s; the bench's peak memory {peak_rss:.0} MiB",
        hashes as f64 / build_secs / 1e6
    );
    println!(
        "file               {:.1} MiB, {:.2} bytes per hash",
        built.bytes as f64 / 1048576.0,
        built.bytes as f64 / built.hashes as f64
    );
    println!("lookup             {lookup_us:.1} µs each ({found} of {} listed hashes found)", listed.len());
    println!(
        "found by chance    {chance} of {STRANGERS} passwords not in the corpus (expected about {:.1})",
        STRANGERS as f64 * hashes as f64 / 2_f64.powi(i32::try_from(crate::breached::bucket_bits(hashes) + 24)?)
    );
    println!(
        "full corpus, extrapolated: {:.1} GiB of file, a build of about {:.0} min holding {:.0} MiB of index",
        built.bytes as f64 * scale / 1073741824.0,
        build_secs * scale / 60.0,
        f64::from(1_u32 << crate::breached::bucket_bits(930_000_000)) * 4.0 / 1048576.0
    );
    std::fs::remove_file(&corpus).ok();
    Ok(())
}

/// The process's peak resident memory so far, in MiB (`VmHWM`).
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).map(str::to_string))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|kb| kb.parse::<f64>().ok()))
        .map_or(0.0, |kb| kb / 1024.0)
}

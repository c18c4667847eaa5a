//! Passwords known from data breaches (Have I Been Pwned's Pwned Passwords), looked up two ways.
//!
//! * **Online**, by the k-anonymity range API: only the first 5 hex digits of the password's
//!   SHA-1 leave the portal, and the answer is padded with decoys (`Add-Padding: true`) so that
//!   its size says nothing either. The answer gives how often the password was seen.
//! * **Offline**, from a file that `passback breached build` makes from the downloadable corpus
//!   (lines `<40 hex SHA-1>:<count>`): the hashes, sorted, in buckets by their first b bits
//!   (b about log2(n) - 5 for n hashes, so that a bucket holds some 32 of them) with an index of
//!   where each bucket starts, and of each hash the next 24 bits. A lookup reads two index
//!   entries and one bucket from the file: nothing is held in memory, the operating system
//!   caches what is read. A hash not in the corpus is found by chance with a probability of
//!   n / 2^(b+24), about 1 in 500,000 at any size. The count is not kept.

use anyhow::{bail, Context};
use secrecy::{ExposeSecret, SecretString};
use sha1::{Digest, Sha1};
use std::fs::File;
use std::io::{BufRead, BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Duration;

/// The SHA-1 of a password, as the corpus has it.
pub fn sha1(password: &SecretString) -> zeroize::Zeroizing<[u8; 20]> {
    sha1_of(password.expose_secret())
}

/// [`sha1`] of a password held otherwise (its NFKC form, say).
pub fn sha1_of(password: &str) -> zeroize::Zeroizing<[u8; 20]> {
    // As good as the password to anyone with a list of hashes: wiped when dropped.
    zeroize::Zeroizing::new(Sha1::digest(password.as_bytes()).into())
}

/// How often the range API at `base_url` says the password whose SHA-1 is `hash` was seen in
/// breaches: `None` when it was not (or only as padding).
pub async fn online(
    client: &reqwest::Client,
    base_url: &str,
    hash: &[u8; 20],
    timeout: Duration,
) -> anyhow::Result<Option<u64>> {
    let hex = zeroize::Zeroizing::new(hex::encode_upper(hash));
    let (prefix, suffix) = hex.split_at(5);
    let url = format!("{}/range/{prefix}", base_url.trim_end_matches('/'));
    let resp = client
        .get(&url)
        .header("Add-Padding", "true")
        .timeout(timeout)
        .send()
        .await
        // Its URL names the hash's prefix: kept out of logs and pages.
        .map_err(reqwest::Error::without_url)
        .context("asking the breached-password service")?;
    if !resp.status().is_success() {
        bail!("the breached-password service answered {}", resp.status());
    }
    // A range holds some 800 to 1,000 lines of 40 bytes, padded; a service that sends far more
    // is not the one asked for, and is not read to the end.
    let mut resp = resp;
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(reqwest::Error::without_url)
        .context("reading the breached-password service's answer")?
    {
        if body.len() + chunk.len() > MAX_RANGE_BYTES {
            bail!("the breached-password service's answer is larger than {MAX_RANGE_BYTES} bytes");
        }
        body.extend_from_slice(&chunk);
    }
    Ok(count_in_range(&String::from_utf8_lossy(&body), suffix))
}

/// The most of a range answer that is read.
const MAX_RANGE_BYTES: usize = 1 << 20;

/// The count the range `body` gives for `suffix` (35 hex digits, upper case); padding lines say 0.
fn count_in_range(body: &str, suffix: &str) -> Option<u64> {
    body.lines()
        .filter_map(|l| l.trim().split_once(':'))
        .find(|(s, _)| s.eq_ignore_ascii_case(suffix))
        .and_then(|(_, n)| n.trim().parse::<u64>().ok())
        .filter(|n| *n > 0)
}

const MAGIC: &[u8; 8] = b"PBBRCH01";
/// Bytes of each hash kept after its bucket's bits.
const KEPT: usize = 3;
const KEPT_BITS: u32 = 8 * KEPT as u32;
const HEADER: u64 = 24;
/// Far more than a bucket ever holds (some 32 on average; a thousand is beyond any chance).
const MAX_BUCKET: u64 = 1000;

/// Bits that choose a hash's bucket, for `n` hashes: some 32 per bucket, from 8 to 28 bits.
pub fn bucket_bits(n: u64) -> u32 {
    (64 - n.leading_zeros()).saturating_sub(5).clamp(8, 28)
}

/// A hash's first 8 bytes as a number: its bucket is the top bits, what is kept the next 24.
fn key_of(hash: &[u8]) -> u64 {
    let mut first = [0_u8; 8];
    first.copy_from_slice(&hash[..8]);
    u64::from_be_bytes(first)
}

fn kept_of(key: u64, bits: u32) -> u32 {
    // Masked to 24 bits: the cast keeps them all.
    ((key >> (64 - bits - KEPT_BITS)) & 0xFF_FFFF) as u32
}

/// A file made by [`build`], read where it lies.
pub struct OfflineFile {
    file: File,
    count: u64,
    bits: u32,
}

impl OfflineFile {
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let mut header = [0_u8; HEADER as usize];
        file.read_exact_at(&mut header, 0).with_context(|| format!("reading {}", path.display()))?;
        if &header[..8] != MAGIC {
            bail!("{} was not made by `passback breached build`", path.display());
        }
        let count = u64::from_le_bytes(header[8..16].try_into()?);
        let bits = u32::from(header[16]);
        let expected = count.checked_mul(KEPT as u64).and_then(|data| data.checked_add(index_end(bits.min(28))));
        if !(8..=28).contains(&bits) || count > u64::from(u32::MAX) || Some(file.metadata()?.len()) != expected {
            bail!("{} is cut short or damaged", path.display());
        }
        Ok(OfflineFile { file, count, bits })
    }

    /// How many hashes it holds.
    pub fn len(&self) -> u64 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Whether the hash `hash` is (as far as its first b + 24 bits tell) among the file's.
    pub fn contains(&self, hash: &[u8; 20]) -> std::io::Result<bool> {
        let key = key_of(hash);
        let bucket = key >> (64 - self.bits);
        let mut bounds = [0_u8; 8];
        self.file.read_exact_at(&mut bounds, HEADER + bucket * 4)?;
        let from = u64::from(u32::from_le_bytes([bounds[0], bounds[1], bounds[2], bounds[3]]));
        let to = u64::from(u32::from_le_bytes([bounds[4], bounds[5], bounds[6], bounds[7]]));
        if to <= from {
            return Ok(false);
        }
        // A bucket holds some 32 hashes: one said to hold far more, or to end past the file's
        // last, is a damaged index, not a reason to read the whole file.
        if to > self.count || to - from > MAX_BUCKET {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "the breached-password file's index is damaged",
            ));
        }
        let mut entries = vec![0_u8; usize::try_from((to - from) * KEPT as u64).unwrap_or(0)];
        self.file.read_exact_at(&mut entries, index_end(self.bits) + from * KEPT as u64)?;
        let wanted = kept_of(key, self.bits).to_be_bytes();
        let wanted = &wanted[4 - KEPT..];
        Ok(entries.chunks_exact(KEPT).collect::<Vec<_>>().binary_search(&wanted).is_ok())
    }
}

/// Where the index of a file with `bits`-bit buckets ends (and the kept bytes begin).
fn index_end(bits: u32) -> u64 {
    HEADER + ((1_u64 << bits) + 1) * 4
}

/// What [`build`] made.
#[derive(Debug)]
pub struct Built {
    pub hashes: u64,
    pub bytes: u64,
    /// Whether the input had to be sorted here (it was not in hash order).
    pub sorted_here: bool,
}

/// The first 8 bytes of the hash on line `n` (numbered from 0) as a number, or `None` for a
/// blank line.
fn key_of_line(n: usize, line: std::io::Result<String>) -> anyhow::Result<Option<u64>> {
    let line = line.with_context(|| format!("reading line {}", n + 1))?;
    let hex = line.trim().split(':').next().unwrap_or_default();
    if hex.is_empty() {
        return Ok(None);
    }
    let mut bytes = [0_u8; 20];
    if hex.len() != 40 || hex::decode_to_slice(hex, &mut bytes).is_err() {
        bail!("line {}: not a SHA-1 in hex", n + 1);
    }
    Ok(Some(key_of(&bytes)))
}

/// Makes the lookup file at `output` from the corpus file `input` (one `<40 hex SHA-1>[:count]`
/// per line, as the downloadable corpus has them; blank lines skipped, any other line that is
/// not a hash an error with its number). In hash order, as the download is, it is read twice
/// and only the index is held (4 bytes a bucket: 128 MiB for the full corpus); otherwise as
/// [`build`].
pub fn build_from_file(input: &Path, output: &Path) -> anyhow::Result<Built> {
    use std::io::{Seek, SeekFrom};
    let open = || -> anyhow::Result<_> {
        let file = File::open(input).with_context(|| format!("opening {}", input.display()))?;
        Ok(std::io::BufReader::with_capacity(1 << 20, file))
    };
    let (mut lines, mut last, mut sorted) = (0_u64, None::<u64>, true);
    for (n, line) in open()?.lines().enumerate() {
        if let Some(key) = key_of_line(n, line)? {
            sorted &= last.is_none_or(|l| l <= key);
            last = Some(key);
            lines += 1;
        }
    }
    if !sorted {
        return build(open()?, output);
    }
    let bits = bucket_bits(lines);
    let mut per_bucket = vec![0_u32; 1 << bits];
    let tmp = output.with_extension("partial");
    let mut file = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    file.seek(SeekFrom::Start(index_end(bits)))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let (mut written, mut previous, mut last, mut seen) = (0_u64, None::<u64>, None::<u64>, 0_u64);
    for (n, line) in open()?.lines().enumerate() {
        let Some(key) = key_of_line(n, line)? else { continue };
        // The file must be the one counted: else entries out of order would hide hashes.
        if last.is_some_and(|l| key < l) {
            bail!("{} changed while it was read (line {} is out of order now)", input.display(), n + 1);
        }
        last = Some(key);
        seen += 1;
        // Two hashes alike in all the bits kept are one entry.
        let kept_bits = key >> (64 - bits - KEPT_BITS);
        if previous == Some(kept_bits) {
            continue;
        }
        previous = Some(kept_bits);
        let bucket = usize::try_from(key >> (64 - bits))?;
        per_bucket[bucket] = per_bucket[bucket].checked_add(1).context("a bucket overflowed")?;
        out.write_all(&kept_of(key, bits).to_be_bytes()[4 - KEPT..])?;
        written += 1;
    }
    if seen != lines {
        bail!("{} changed while it was read ({lines} hashes, then {seen})", input.display());
    }
    let mut file = out.into_inner().map_err(|e| e.into_error())?;
    file.seek(SeekFrom::Start(0))?;
    let mut head = BufWriter::with_capacity(1 << 20, file);
    write_header(&mut head, written, bits)?;
    let mut at = 0_u32;
    for n in per_bucket {
        head.write_all(&at.to_le_bytes())?;
        at = at.checked_add(n).context("more hashes than the file's index can hold")?;
    }
    head.write_all(&at.to_le_bytes())?;
    finish(head, &tmp, output)?;
    Ok(Built { hashes: written, bytes: index_end(bits) + written * KEPT as u64, sorted_here: false })
}

/// Makes the lookup file at `output` from `input` (as [`build_from_file`] reads it), holding each
/// hash as 8 bytes while it does (the whole corpus: about 7 GiB), sorting them first if need be:
/// for input that can be read only once, or not in hash order.
pub fn build(input: impl BufRead, output: &Path) -> anyhow::Result<Built> {
    let mut keys: Vec<u64> = Vec::new();
    let mut sorted = true;
    for (n, line) in input.lines().enumerate() {
        if let Some(key) = key_of_line(n, line)? {
            sorted &= keys.last().is_none_or(|last| *last <= key);
            keys.push(key);
        }
    }
    if !sorted {
        keys.sort_unstable();
    }
    let bits = bucket_bits(keys.len() as u64);
    // Two hashes alike in all the bits kept are one entry.
    keys.dedup_by_key(|k| *k >> (64 - bits - KEPT_BITS));
    let tmp = output.with_extension("partial");
    let file = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    write_header(&mut out, keys.len() as u64, bits)?;
    // The index: where each bucket starts, then where the last one ends.
    let mut at = 0_usize;
    for bucket in 0..=(1_u64 << bits) {
        while at < keys.len() && (keys[at] >> (64 - bits)) < bucket {
            at += 1;
        }
        out.write_all(&u32::try_from(at).context("more hashes than the file's index can hold")?.to_le_bytes())?;
    }
    for key in &keys {
        out.write_all(&kept_of(*key, bits).to_be_bytes()[4 - KEPT..])?;
    }
    finish(out, &tmp, output)?;
    Ok(Built {
        hashes: keys.len() as u64,
        bytes: index_end(bits) + keys.len() as u64 * KEPT as u64,
        sorted_here: !sorted,
    })
}

fn write_header(out: &mut impl Write, count: u64, bits: u32) -> anyhow::Result<()> {
    out.write_all(MAGIC)?;
    out.write_all(&count.to_le_bytes())?;
    out.write_all(&[u8::try_from(bits)?, 0, 0, 0, 0, 0, 0, 0])?;
    Ok(())
}

/// Flushes and syncs the file made at `tmp`, then puts it at `output` in one step.
fn finish(out: BufWriter<File>, tmp: &Path, output: &Path) -> anyhow::Result<()> {
    let file = out.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    std::fs::rename(tmp, output).with_context(|| format!("writing {}", output.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash_of(p: &str) -> [u8; 20] {
        *sha1(&SecretString::from(p))
    }

    #[test]
    fn a_range_answer_gives_the_count_of_its_suffix_and_padding_counts_for_nothing() {
        let body = "0018A45C4D1DEF81644B54AB7F969B88D65:1\r\n1E4C9B93F3F0682250B6CF8331B7EE68FD8:3861493\r\n\
                    1E4C9B93F3F0682250B6CF8331B7EE68FD9:0\r\n";
        assert_eq!(count_in_range(body, "1E4C9B93F3F0682250B6CF8331B7EE68FD8"), Some(3_861_493));
        assert_eq!(count_in_range(body, "1E4C9B93F3F0682250B6CF8331B7EE68FD9"), None, "padding");
        assert_eq!(count_in_range(body, "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF"), None);
        // "password": its SHA-1 starts 5BAA6.
        assert_eq!(hex::encode_upper(hash_of("password")), "5BAA61E4C9B93F3F0682250B6CF8331B7EE68FD8");
    }

    #[test]
    fn a_built_file_finds_every_hash_it_was_made_from_and_nothing_else_in_order_or_not() {
        let dir = crate::files::scratch_dir("breached");
        let listed: Vec<String> = (0..5_000).map(|i| format!("listed password {i}")).collect();
        let mut lines: Vec<String> =
            listed.iter().map(|p| format!("{}:{}", hex::encode_upper(hash_of(p)), 7)).collect();
        for sorted in [false, true] {
            if sorted {
                lines.sort();
            }
            let path = dir.join("breached.bin");
            let built = build(std::io::Cursor::new(lines.join("\n")), &path).unwrap();
            // From a file, in two passes when it is in order: the same bytes.
            std::fs::write(dir.join("corpus.txt"), lines.join("\r\n") + "\n\n").unwrap();
            let from_file = build_from_file(&dir.join("corpus.txt"), &dir.join("from-file.bin")).unwrap();
            assert_eq!((from_file.hashes, from_file.bytes), (built.hashes, built.bytes));
            assert_eq!(std::fs::read(dir.join("from-file.bin")).unwrap(), std::fs::read(&path).unwrap());
            assert_eq!((built.hashes, built.sorted_here), (5_000, !sorted));
            assert_eq!(std::fs::metadata(&path).unwrap().len(), built.bytes);
            let file = OfflineFile::open(&path).unwrap();
            assert_eq!(file.len(), 5_000);
            assert!(listed.iter().all(|p| file.contains(&hash_of(p)).unwrap()));
            let others = (0..5_000).filter(|i| file.contains(&hash_of(&format!("other {i}"))).unwrap()).count();
            assert_eq!(others, 0);
        }
        assert!(build(std::io::Cursor::new("5BAA6:1\n"), &dir.join("bad.bin")).is_err());
        std::fs::write(dir.join("short.bin"), b"PBBRCH01\x05\0\0\0\0\0\0\0\x08\0\0\0\0\0\0\0").unwrap();
        assert!(OfflineFile::open(&dir.join("short.bin")).is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }
}

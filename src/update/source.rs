//! The release source: a base URL (`update_source`) laid out as the buildspec publishes a
//! build, one directory per release version instead of per commit:
//!
//! ```text
//! <update_source>/latest                                   one line: the version `auto` installs
//! <update_source>/<X.Y.Z>/SHA256SUMS                       `sha256sum` lines (packaging/build)
//! <update_source>/<X.Y.Z>/codedeploy-agent-<X.Y.Z>-<arch>.tar.gz   arch: x86_64 | aarch64
//! ```
//!
//! `file://`, `https://` and `http://` (loopback or a trusted network only: the checksum comes
//! from the same source). Downloads stream to a file beside the binary, hashed as they arrive.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ring::digest::{Context, SHA256};

use super::{UpdateError, Version};

/// The most a release tarball may be.
const MAX_DOWNLOAD: u64 = 512 * 1024 * 1024;
/// The most `latest` and `SHA256SUMS` may be.
const MAX_TEXT: u64 = 64 * 1024;

/// Refuses base URLs of another scheme.
pub fn check_base_url(url: &str) -> Result<(), String> {
    if ["file://", "https://", "http://"]
        .iter()
        .any(|s| url.starts_with(s))
    {
        Ok(())
    } else {
        Err(format!(
            "{url}: expected a file://, https:// or http:// base URL"
        ))
    }
}

/// The tarball of `version` for this machine, as packaging/build names it.
pub fn tarball_name(version: Version) -> String {
    format!(
        "codedeploy-agent-{version}-{}.tar.gz",
        std::env::consts::ARCH
    )
}

/// A release source.
#[derive(Debug, Clone)]
pub struct Source {
    base: String,
    client: Option<reqwest::Client>,
}

impl Source {
    pub fn new(base: &str, proxy: Option<&str>) -> Result<Self, UpdateError> {
        let base = base.trim_end_matches('/').to_owned();
        let client = if base.starts_with("file://") {
            None
        } else {
            crate::control::identity::install_crypto_provider();
            let mut builder = reqwest::Client::builder()
                .user_agent(format!("codedeploy-agent/{}", crate::VERSION))
                .connect_timeout(Duration::from_secs(30))
                .read_timeout(Duration::from_secs(60));
            if let Some(proxy) = proxy
                && !is_loopback(&base)
            {
                builder =
                    builder.proxy(reqwest::Proxy::all(proxy).map_err(|e| UpdateError::Fetch {
                        url: base.clone(),
                        message: format!("proxy_uri {proxy} is not usable: {e}"),
                    })?);
            }
            builder = crate::control::identity::http_only(builder, base.starts_with("http://"));
            Some(builder.build().map_err(|e| UpdateError::Fetch {
                url: base.clone(),
                message: crate::control::identity::tls_client_error(&e),
            })?)
        };
        Ok(Self { base, client })
    }

    pub fn url(&self, rel: &str) -> String {
        format!("{}/{rel}", self.base)
    }

    /// The version `latest` names.
    pub async fn latest(&self) -> Result<Version, UpdateError> {
        let url = self.url("latest");
        let text = self.text(&url).await?;
        Version::parse(text.lines().next().unwrap_or_default()).ok_or(UpdateError::BadLatest {
            url,
            text: text.chars().take(80).collect(),
        })
    }

    /// The SHA-256 `SHA256SUMS` of `version` lists for `file`.
    pub async fn checksum(&self, version: Version, file: &str) -> Result<String, UpdateError> {
        let url = self.url(&format!("{version}/SHA256SUMS"));
        let text = self.text(&url).await?;
        parse_sums(&text, file).ok_or(UpdateError::NoChecksum {
            sums: url,
            file: file.to_owned(),
        })
    }

    async fn text(&self, url: &str) -> Result<String, UpdateError> {
        let mut buf = Vec::new();
        self.fetch(url, &mut buf, MAX_TEXT).await?;
        String::from_utf8(buf).map_err(|_| UpdateError::Fetch {
            url: url.to_owned(),
            message: "not UTF-8 text".into(),
        })
    }

    /// Streams `url` into `out`; returns the SHA-256 (hex) of what was written.
    pub async fn download(&self, url: &str, out: &mut File) -> Result<String, UpdateError> {
        let mut hashing = Hashing {
            inner: out,
            context: Context::new(&SHA256),
        };
        self.fetch(url, &mut hashing, MAX_DOWNLOAD).await?;
        Ok(hex::encode(hashing.context.finish()))
    }

    async fn fetch(
        &self,
        url: &str,
        out: &mut (dyn Write + Send),
        max: u64,
    ) -> Result<(), UpdateError> {
        let err = |message: String| UpdateError::Fetch {
            url: url.to_owned(),
            message,
        };
        let Some(client) = &self.client else {
            let path = PathBuf::from(url.trim_start_matches("file://"));
            let file = File::open(&path).map_err(|e| err(e.to_string()))?;
            let copied = io::copy(&mut file.take(max + 1), out).map_err(|e| err(e.to_string()))?;
            return if copied > max {
                Err(err(format!("larger than {max} bytes")))
            } else {
                Ok(())
            };
        };
        let mut response = client
            .get(url)
            .send()
            .await
            .map_err(|e| err(e.to_string()))?;
        if !response.status().is_success() {
            return Err(err(format!("HTTP {}", response.status())));
        }
        let mut total = 0u64;
        while let Some(chunk) = response.chunk().await.map_err(|e| err(e.to_string()))? {
            total += chunk.len() as u64;
            if total > max {
                return Err(err(format!("larger than {max} bytes")));
            }
            out.write_all(&chunk).map_err(|e| err(e.to_string()))?;
        }
        Ok(())
    }
}

fn is_loopback(url: &str) -> bool {
    let host = url
        .split_once("://")
        .map_or("", |(_, rest)| rest.split(['/', ':']).next().unwrap_or(""));
    host == "localhost"
        || host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

struct Hashing<'a> {
    inner: &'a mut File,
    context: Context,
}

impl Write for Hashing<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.context.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The checksum `sha256sum` output lists for `file` (text `  name` or binary ` *name`).
pub fn parse_sums(text: &str, file: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let (sum, name) = line.split_once(char::is_whitespace)?;
        let name = name.trim_start().trim_start_matches('*');
        (name == file && sum.len() == 64 && sum.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| sum.to_ascii_lowercase())
    })
}

/// The SHA-256 (hex) of a file.
pub fn sha256_file(path: &Path) -> io::Result<String> {
    let mut file = File::open(path)?;
    let mut context = Context::new(&SHA256);
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        context.update(&buf[..n]);
    }
    Ok(hex::encode(context.finish()))
}

/// Copies the tarball's `<dir>/bin/codedeploy-agent` into `out`.
pub fn extract_binary(tarball: &Path, out: &mut File) -> Result<(), UpdateError> {
    let name = tarball.display().to_string();
    let bad = |message: String| UpdateError::Fetch {
        url: name.clone(),
        message,
    };
    let file = File::open(tarball).map_err(|e| bad(e.to_string()))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    for entry in archive.entries().map_err(|e| bad(e.to_string()))? {
        let mut entry = entry.map_err(|e| bad(e.to_string()))?;
        let path = entry.path().map_err(|e| bad(e.to_string()))?.into_owned();
        let components: Vec<_> = path.components().collect();
        let is_binary = components.len() == 3
            && path.ends_with("bin/codedeploy-agent")
            && entry.header().entry_type().is_file();
        if is_binary {
            io::copy(&mut (&mut entry).take(MAX_DOWNLOAD), out).map_err(|e| bad(e.to_string()))?;
            return Ok(());
        }
    }
    Err(UpdateError::NoBinary { file: name })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_are_found_in_both_sha256sum_forms() {
        let a = "a".repeat(64);
        let b = "B".repeat(64);
        let text = format!("{a}  one.tar.gz\n{b} *two.tar.gz\n");
        assert_eq!(parse_sums(&text, "one.tar.gz"), Some(a));
        assert_eq!(parse_sums(&text, "two.tar.gz"), Some("b".repeat(64)));
        assert_eq!(parse_sums(&text, "three.tar.gz"), None);
        assert_eq!(parse_sums("xyz  one.tar.gz", "one.tar.gz"), None);
    }

    #[test]
    fn only_loopback_skips_the_proxy() {
        assert!(is_loopback("http://127.0.0.1:8080/r"));
        assert!(is_loopback("http://localhost/r"));
        assert!(!is_loopback("https://releases.example.com/r"));
    }
}

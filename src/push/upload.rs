//! Upload the bundle to S3: one streamed PutObject below the threshold, a multipart upload
//! above it. Parts are streamed from the file (never read whole into memory), at most
//! [`CONCURRENT_PARTS`] at a time, each with a CRC32 checksum S3 verifies; a failed multipart
//! upload is aborted so no parts are left behind.

use std::path::Path;

use aws_sdk_s3::primitives::{ByteStream, Length};
use aws_sdk_s3::types::{
    ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart, ServerSideEncryption,
};
use tokio::task::JoinSet;

use super::{PushError, S3Target, describe};

/// Bundles at least this large go up in parts.
pub const DEFAULT_THRESHOLD: u64 = 64 * 1024 * 1024;
/// Part size, grown for very large bundles so no upload needs more than 10,000 parts.
pub const DEFAULT_PART_SIZE: u64 = 16 * 1024 * 1024;
/// Parts in flight at once.
pub const CONCURRENT_PARTS: usize = 4;
/// S3's limits.
const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
const MAX_PARTS: u64 = 10_000;

/// When to use multipart, how big the parts are, and the server-side encryption to ask for.
#[derive(Debug, Clone)]
pub struct Tuning {
    threshold: u64,
    part_size: u64,
    sse: Option<ServerSideEncryption>,
    sse_kms_key_id: Option<String>,
}

impl Tuning {
    pub fn new(threshold: u64, part_size: u64) -> Result<Self, PushError> {
        if part_size < MIN_PART_SIZE {
            return Err(PushError::Usage(format!(
                "--part-size {part_size}: S3 needs parts of at least {MIN_PART_SIZE} bytes"
            )));
        }
        Ok(Self {
            threshold,
            part_size,
            sse: None,
            sse_kms_key_id: None,
        })
    }

    /// `x-amz-server-side-encryption` (`AES256`, `aws:kms`) and its KMS key id.
    pub fn with_encryption(mut self, sse: Option<&str>, kms_key_id: Option<&str>) -> Self {
        self.sse = sse.map(ServerSideEncryption::from);
        self.sse_kms_key_id = kms_key_id.map(str::to_owned);
        self
    }

    /// The part size for a file of `size` bytes.
    fn part_size_for(&self, size: u64) -> u64 {
        self.part_size.max(size.div_ceil(MAX_PARTS))
    }
}

/// What S3 stored.
#[derive(Debug, Clone)]
pub struct Uploaded {
    /// Without the quotes S3 puts around it (CodeDeploy's `eTag` wants it bare); `None` when
    /// S3 sent none (then the revision names no ETag rather than an empty one).
    pub etag: Option<String>,
    pub version_id: Option<String>,
    pub size: u64,
}

/// Uploads `file` to `target`.
pub async fn put(
    client: &aws_sdk_s3::Client,
    target: &S3Target,
    file: &Path,
    tuning: &Tuning,
) -> Result<Uploaded, PushError> {
    let size = tokio::fs::metadata(file)
        .await
        .map_err(|e| PushError::Usage(format!("cannot read {}: {e}", file.display())))?
        .len();
    let where_ = format!("s3://{}/{}", target.bucket, target.key);
    if size < tuning.threshold {
        let body = ByteStream::from_path(file)
            .await
            .map_err(|e| PushError::Usage(format!("cannot read {}: {e}", file.display())))?;
        let out = client
            .put_object()
            .bucket(&target.bucket)
            .key(&target.key)
            .set_server_side_encryption(tuning.sse.clone())
            .set_ssekms_key_id(tuning.sse_kms_key_id.clone())
            .body(body)
            .send()
            .await
            .map_err(|e| upload_error(&where_, &describe(&e)))?;
        return Ok(Uploaded {
            etag: bare(out.e_tag()),
            version_id: out.version_id().map(str::to_owned),
            size,
        });
    }
    let created = client
        .create_multipart_upload()
        .bucket(&target.bucket)
        .key(&target.key)
        .checksum_algorithm(ChecksumAlgorithm::Crc32)
        .set_server_side_encryption(tuning.sse.clone())
        .set_ssekms_key_id(tuning.sse_kms_key_id.clone())
        .send()
        .await
        .map_err(|e| upload_error(&where_, &describe(&e)))?;
    let upload_id = created
        .upload_id()
        .ok_or_else(|| upload_error(&where_, "CreateMultipartUpload returned no upload id"))?
        .to_owned();
    // Ctrl-C while parts are in flight aborts the upload, so no parts are left behind (S3
    // bills them until a lifecycle rule removes them).
    let parts = tokio::select! {
        r = put_parts(client, target, file, size, tuning.part_size_for(size), &upload_id) => r,
        _ = tokio::signal::ctrl_c() => {
            abort(client, target, &upload_id).await;
            return Err(PushError::Interrupted(format!(
                "interrupted: the multipart upload to {where_} was aborted; nothing was deployed"
            )));
        }
    };
    match parts {
        Ok(parts) => {
            let out = client
                .complete_multipart_upload()
                .bucket(&target.bucket)
                .key(&target.key)
                .upload_id(&upload_id)
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(parts))
                        .build(),
                )
                .send()
                .await;
            match out {
                Ok(out) => Ok(Uploaded {
                    etag: bare(out.e_tag()),
                    version_id: out.version_id().map(str::to_owned),
                    size,
                }),
                Err(e) => {
                    abort(client, target, &upload_id).await;
                    Err(upload_error(&where_, &describe(&e)))
                }
            }
        }
        Err(message) => {
            abort(client, target, &upload_id).await;
            Err(upload_error(&where_, &message))
        }
    }
}

/// Uploads every part, [`CONCURRENT_PARTS`] at a time; the parts in order, or the first error.
async fn put_parts(
    client: &aws_sdk_s3::Client,
    target: &S3Target,
    file: &Path,
    size: u64,
    part_size: u64,
    upload_id: &str,
) -> Result<Vec<CompletedPart>, String> {
    let count = size.div_ceil(part_size);
    let mut done = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
    let mut running = JoinSet::new();
    let mut next = 0u64;
    loop {
        while next < count && running.len() < CONCURRENT_PARTS {
            let offset = next * part_size;
            let length = part_size.min(size - offset);
            let number = i32::try_from(next + 1).map_err(|_| "too many parts".to_string())?;
            let request = client
                .upload_part()
                .bucket(&target.bucket)
                .key(&target.key)
                .upload_id(upload_id)
                .part_number(number)
                .checksum_algorithm(ChecksumAlgorithm::Crc32);
            let file = file.to_path_buf();
            running.spawn(async move {
                let body = ByteStream::read_from()
                    .path(&file)
                    .offset(offset)
                    .length(Length::Exact(length))
                    .build()
                    .await
                    .map_err(|e| format!("cannot read part {number} of {}: {e}", file.display()))?;
                let out = request
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| format!("part {number}: {}", describe(&e)))?;
                Ok::<_, String>(
                    CompletedPart::builder()
                        .part_number(number)
                        .set_e_tag(out.e_tag().map(str::to_owned))
                        .set_checksum_crc32(out.checksum_crc32().map(str::to_owned))
                        .build(),
                )
            });
            next += 1;
        }
        let Some(joined) = running.join_next().await else {
            break;
        };
        match joined {
            Ok(Ok(part)) => done.push(part),
            Ok(Err(message)) => return Err(message),
            Err(e) => return Err(format!("a part upload task failed: {e}")),
        }
    }
    done.sort_by_key(|p| p.part_number());
    Ok(done)
}

/// Best effort: S3 keeps (and bills) the parts of an upload nobody aborts.
async fn abort(client: &aws_sdk_s3::Client, target: &S3Target, upload_id: &str) {
    if let Err(e) = client
        .abort_multipart_upload()
        .bucket(&target.bucket)
        .key(&target.key)
        .upload_id(upload_id)
        .send()
        .await
    {
        crate::errln!(
            "codedeploy-agent deploy: could not abort the multipart upload {upload_id} of \
             s3://{}/{}: {}; a bucket lifecycle rule (AbortIncompleteMultipartUpload) cleans \
             such parts up",
            target.bucket,
            target.key,
            describe(&e)
        );
    }
}

fn upload_error(where_: &str, detail: &str) -> PushError {
    if detail.contains("no credentials found") || detail.contains("credential provider") {
        return PushError::Aws(format!(
            "uploading the bundle to {where_} failed: no AWS credentials were found ({detail}). \
             Give the command credentials: AWS_PROFILE (after `aws configure` or `aws sso \
             login`), AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or an instance role"
        ));
    }
    PushError::Aws(format!(
        "uploading the bundle to {where_} failed: {detail}. Check the bucket name, its \
         region, and that you may call s3:PutObject on it"
    ))
}

fn bare(etag: Option<&str>) -> Option<String> {
    etag.map(|e| e.trim_matches('"'))
        .filter(|e| !e.is_empty())
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_size_grows_to_stay_within_ten_thousand_parts() {
        let t = Tuning::new(DEFAULT_THRESHOLD, DEFAULT_PART_SIZE).expect("valid");
        assert_eq!(t.part_size_for(100 << 20), DEFAULT_PART_SIZE);
        let huge = 500u64 << 30;
        let part = t.part_size_for(huge);
        assert!(huge.div_ceil(part) <= MAX_PARTS);
        assert!(part > DEFAULT_PART_SIZE);
        assert!(Tuning::new(1, MIN_PART_SIZE - 1).is_err());
    }

    #[test]
    fn etag_loses_its_quotes() {
        assert_eq!(bare(Some("\"abc-3\"")).as_deref(), Some("abc-3"));
        assert_eq!(bare(Some("\"\"")), None);
        assert_eq!(bare(None), None);
    }
}

//! The AWS calls of the Invoke-action handlers and starters, through the real SDK clients,
//! against a recording stub on 127.0.0.1.
//!
//! moto (5.2.1) has no Image Builder backend and its CodePipeline backend only does pipeline
//! CRUD: none of StartImagePipelineExecution, StartPipelineExecution, GetJobDetails,
//! ListActionExecutions, PutJobSuccessResult or PutJobFailureResult. So this stub speaks just
//! enough of both protocols (awsJson1_1 for CodePipeline, restJson1 for Image Builder) to
//! answer them, and records every request so the tests can count the job reports.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use aws_credential_types::Credentials;
use pipeline_lambdas::aws::{self, JobOutcome};
use serde_json::{Value, json};

#[derive(Debug, Clone)]
struct Request {
    /// X-Amz-Target operation for CodePipeline, the path for Image Builder.
    operation: String,
    body: Value,
}

type Responder = dyn Fn(&Request) -> (u16, Value) + Send + Sync;

struct Stub {
    port: u16,
    requests: Arc<Mutex<Vec<Request>>>,
}

impl Stub {
    fn start(respond: impl Fn(&Request) -> (u16, Value) + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (log, respond): (_, Arc<Responder>) = (requests.clone(), Arc::new(respond));
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (log, respond) = (log.clone(), respond.clone());
                std::thread::spawn(move || serve(stream, &log, &*respond));
            }
        });
        Self { port, requests }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn operations(&self) -> Vec<String> {
        let requests = self.requests.lock().expect("lock");
        requests.iter().map(|r| r.operation.clone()).collect()
    }

    fn bodies(&self, operation: &str) -> Vec<Value> {
        let requests = self.requests.lock().expect("lock");
        requests
            .iter()
            .filter(|r| r.operation == operation)
            .map(|r| r.body.clone())
            .collect()
    }

    fn codepipeline(&self) -> aws_sdk_codepipeline::Client {
        aws_sdk_codepipeline::Client::from_conf(
            aws_sdk_codepipeline::Config::builder()
                .behavior_version(aws_sdk_codepipeline::config::BehaviorVersion::latest())
                .region(aws_sdk_codepipeline::config::Region::new("us-east-1"))
                .credentials_provider(Credentials::new("testing", "testing", None, None, "stub"))
                .endpoint_url(self.url())
                .http_client(aws::http_client())
                .build(),
        )
    }

    fn imagebuilder(&self) -> aws_sdk_imagebuilder::Client {
        aws_sdk_imagebuilder::Client::from_conf(
            aws_sdk_imagebuilder::Config::builder()
                .behavior_version(aws_sdk_imagebuilder::config::BehaviorVersion::latest())
                .region(aws_sdk_imagebuilder::config::Region::new("us-east-1"))
                .credentials_provider(Credentials::new("testing", "testing", None, None, "stub"))
                .endpoint_url(self.url())
                .http_client(aws::http_client())
                .build(),
        )
    }
}

/// HTTP/1.1 with keep-alive and Content-Length bodies, which is all the SDK sends here.
fn serve(stream: TcpStream, log: &Mutex<Vec<Request>>, respond: &Responder) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut writer = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let path = request_line
            .split_whitespace()
            .nth(1)
            .unwrap_or("/")
            .to_owned();
        let (mut length, mut target) = (0usize, None);
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').unwrap_or((line, ""));
            match name.to_ascii_lowercase().as_str() {
                "content-length" => length = value.trim().parse().unwrap_or(0),
                "x-amz-target" => target = Some(value.trim().to_owned()),
                _ => {}
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let operation = match target {
            Some(t) => t.rsplit('.').next().unwrap_or_default().to_owned(),
            None => path
                .trim_start_matches('/')
                .split('?')
                .next()
                .unwrap_or_default()
                .to_owned(),
        };
        let request = Request {
            operation,
            body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        };
        let (status, answer) = respond(&request);
        log.lock().expect("lock").push(request);
        let answer = answer.to_string();
        let head = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/x-amz-json-1.1\r\ncontent-length: {}\r\nx-amzn-requestid: stub\r\n\r\n",
            answer.len()
        );
        if writer
            .write_all(head.as_bytes())
            .and_then(|()| writer.write_all(answer.as_bytes()))
            .is_err()
        {
            return;
        }
    }
}

const ALICE: &str = "arn:aws:iam::123456789012:user/alice";
const BOB: &str = "arn:aws:sts::123456789012:assumed-role/pmo/bob@example.com";
const PARAMS: &str = r#"{"approvals":["QCApproval","PMOApproval"]}"#;

fn action(name: &str, by: &str, at: f64) -> Value {
    json!({
        "pipelineExecutionId": "exec-1",
        "actionExecutionId": format!("id-{name}"),
        "stageName": name,
        "actionName": name,
        "status": "Succeeded",
        "updatedBy": by,
        "lastUpdateTime": at,
    })
}

/// A CodePipeline whose current execution has the given approvals, split over two pages.
fn pipeline_with(qc: &'static str, pmo: &'static str) -> impl Fn(&Request) -> (u16, Value) {
    move |r| match r.operation.as_str() {
        "GetJobDetails" => (
            200,
            json!({"jobDetails": {"id": "job-1", "accountId": "123456789012", "data": {"pipelineContext": {
                "pipelineName": "codedeploy-agent-qat", "pipelineExecutionId": "exec-1",
                "stage": {"name": "VerifyApprovers"}, "action": {"name": "DistinctApprovers"}}}}}),
        ),
        "ListActionExecutions" if r.body.get("nextToken").is_none() => (
            200,
            json!({"actionExecutionDetails": [action("QCApproval", qc, 1_763_780_000.0)], "nextToken": "page-2"}),
        ),
        "ListActionExecutions" => (
            200,
            json!({"actionExecutionDetails": [action("PMOApproval", pmo, 1_763_780_100.0)]}),
        ),
        "PutJobSuccessResult" | "PutJobFailureResult" => (200, json!({})),
        other => (
            400,
            json!({"__type": "ValidationException", "message": format!("unexpected {other}")}),
        ),
    }
}

fn reports(stub: &Stub) -> Vec<String> {
    stub.operations()
        .into_iter()
        .filter(|o| o.starts_with("PutJob"))
        .collect()
}

#[tokio::test]
async fn different_approvers_report_success_once_after_reading_every_page() {
    let stub = Stub::start(pipeline_with(ALICE, BOB));
    let outcome = aws::check_distinct_approvers(&stub.codepipeline(), "job-1", Some(PARAMS))
        .await
        .expect("reported");
    assert!(
        matches!(&outcome, JobOutcome::Success(s) if s.contains("QCApproval by arn:aws:iam::123456789012:user/alice")),
        "{outcome:?}"
    );
    assert_eq!(reports(&stub), ["PutJobSuccessResult"]);
    let lists = stub.bodies("ListActionExecutions");
    assert_eq!(lists.len(), 2, "both pages read");
    assert_eq!(lists[0]["pipelineName"], "codedeploy-agent-qat");
    assert_eq!(lists[0]["filter"]["pipelineExecutionId"], "exec-1");
    assert_eq!(lists[1]["nextToken"], "page-2");
    assert_eq!(stub.bodies("PutJobSuccessResult")[0]["jobId"], "job-1");
}

#[tokio::test]
async fn same_approver_reports_failure_once_with_the_reason() {
    let stub = Stub::start(pipeline_with(ALICE, ALICE));
    aws::check_distinct_approvers(&stub.codepipeline(), "job-1", Some(PARAMS))
        .await
        .expect("reported");
    assert_eq!(reports(&stub), ["PutJobFailureResult"]);
    let body = &stub.bodies("PutJobFailureResult")[0];
    assert_eq!(body["failureDetails"]["type"], "JobFailed");
    assert_eq!(
        body["failureDetails"]["message"],
        "Distinct-approvers check failed: QCApproval and PMOApproval were all approved by arn:aws:iam::123456789012:user/alice; each must be approved by a different person."
    );
}

#[tokio::test]
async fn unreadable_approvals_report_failure_once() {
    let stub = Stub::start(|r: &Request| match r.operation.as_str() {
        "PutJobFailureResult" => (200, json!({})),
        _ => (
            400,
            json!({"__type": "AccessDeniedException", "message": "not authorized to perform codepipeline:GetJobDetails"}),
        ),
    });
    let outcome = aws::check_distinct_approvers(&stub.codepipeline(), "job-1", Some(PARAMS))
        .await
        .expect("reported");
    assert!(
        matches!(&outcome, JobOutcome::Failure(m) if m.starts_with("could not read the approvals: GetJobDetails failed") && m.contains("not authorized")),
        "{outcome:?}"
    );
    assert_eq!(reports(&stub), ["PutJobFailureResult"]);
}

#[tokio::test]
async fn bad_user_parameters_fail_the_job_without_reading_anything() {
    let stub = Stub::start(pipeline_with(ALICE, BOB));
    aws::check_distinct_approvers(
        &stub.codepipeline(),
        "job-1",
        Some("QCApproval,PMOApproval"),
    )
    .await
    .expect("reported");
    assert_eq!(stub.operations(), ["PutJobFailureResult"]);
}

#[tokio::test]
async fn a_failing_report_is_an_error_and_is_not_repeated() {
    let stub = Stub::start(|r: &Request| match r.operation.as_str() {
        "PutJobSuccessResult" => (
            400,
            json!({"__type": "InvalidJobStateException", "message": "job already completed"}),
        ),
        _ => pipeline_with(ALICE, BOB)(r),
    });
    let err = aws::check_distinct_approvers(&stub.codepipeline(), "job-1", Some(PARAMS))
        .await
        .expect_err("report failed");
    assert_eq!(err.operation, "PutJobSuccessResult");
    assert_eq!(reports(&stub), ["PutJobSuccessResult"]);
}

const COMMIT: &str = "c5ba8e670a7bb2b6bc0b4d6c0ff1c1a2b3c4d5e6";
const QAT_IMAGE: &str =
    "arn:aws:imagebuilder:us-east-1:123456789012:image/codedeploy-agent-qat/1.0.42/1";
const PROD_PIPELINE: &str =
    "arn:aws:imagebuilder:us-east-1:123456789012:image-pipeline/codedeploy-agent-prod";
const AGENT: &str =
    "arn:aws:imagebuilder:us-east-1:123456789012:component/codedeploy-agent-agent/1.0.0/1";

fn agent_params(commit: &str) -> Value {
    json!([{"name": "Commit", "value": [commit]}, {"name": "Version", "value": ["0.1.0"]},
           {"name": "ArtifactBucket", "value": ["bucket"]}, {"name": "Sha256", "value": ["ab".repeat(32)]}])
}

/// Image Builder as the promotion sees it: the QAT image baked from `qat_commit`, the
/// production pipeline on its template recipe.
fn image_builder(qat_commit: &'static str) -> impl Fn(&Request) -> (u16, Value) + Send + Sync {
    move |r: &Request| match r.operation.as_str() {
        "GetImage" => (
            200,
            json!({"image": {"arn": QAT_IMAGE, "imageRecipe": {"version": "1.0.42",
            "components": [{"componentArn": AGENT, "parameters": agent_params(qat_commit)}]}}}),
        ),
        "GetImagePipeline" => (
            200,
            json!({"imagePipeline": {"arn": PROD_PIPELINE,
            "imageRecipeArn": "arn:aws:imagebuilder:us-east-1:123456789012:image-recipe/codedeploy-agent-prod/1.0.0",
            "infrastructureConfigurationArn": "arn:infra", "distributionConfigurationArn": "arn:dist", "status": "ENABLED"}}),
        ),
        "GetImageRecipe" => (
            200,
            json!({"imageRecipe": {"name": "codedeploy-agent-prod", "version": "1.0.0",
            "parentImage": "arn:aws:imagebuilder:us-east-1:aws:image/amazon-linux-2023-x86/x.x.x",
            "components": [{"componentArn": "arn:aws:imagebuilder:us-east-1:aws:component/update-linux/x.x.x"},
                           {"componentArn": AGENT, "parameters": agent_params("0000000000000000000000000000000000000000")}]}}),
        ),
        "CreateImageRecipe" => (
            200,
            json!({"imageRecipeArn": "arn:aws:imagebuilder:us-east-1:123456789012:image-recipe/codedeploy-agent-prod/1.0.42"}),
        ),
        "UpdateImagePipeline" => (200, json!({"imagePipelineArn": PROD_PIPELINE})),
        "StartImagePipelineExecution" => (
            200,
            json!({"requestId": "r-1", "clientToken": r.body["clientToken"], "imageBuildVersionArn": "arn:aws:imagebuilder:us-east-1:123456789012:image/codedeploy-agent-prod/1.0.42/1"}),
        ),
        _ => (200, json!({})),
    }
}

fn promote_params() -> String {
    format!(r#"{{"commit":"{COMMIT}","qatImage":"{QAT_IMAGE}"}}"#)
}

#[tokio::test]
async fn start_prod_image_bakes_on_the_approved_qat_image_and_reports_success_once() {
    let stub = Stub::start(image_builder(COMMIT));
    let params = promote_params();
    let outcome = aws::start_prod_image(
        &stub.codepipeline(),
        &stub.imagebuilder(),
        "job-2",
        Some(&params),
        PROD_PIPELINE,
    )
    .await
    .expect("reported");
    assert!(
        matches!(&outcome, JobOutcome::Success(m) if m.contains("codedeploy-agent-prod/1.0.42/1")),
        "{outcome:?}"
    );
    assert_eq!(
        stub.operations(),
        [
            "GetImage",
            "GetImagePipeline",
            "GetImageRecipe",
            "CreateImageRecipe",
            "UpdateImagePipeline",
            "StartImagePipelineExecution",
            "PutJobSuccessResult"
        ]
    );
    // Same parent (the QAT image itself), same agent parameters, no OS update run again.
    let recipe = &stub.bodies("CreateImageRecipe")[0];
    assert_eq!(recipe["parentImage"], QAT_IMAGE);
    assert_eq!(recipe["semanticVersion"], "1.0.42");
    assert_eq!(recipe["components"].as_array().map(Vec::len), Some(1));
    assert_eq!(recipe["components"][0]["parameters"], agent_params(COMMIT));
    let update = &stub.bodies("UpdateImagePipeline")[0];
    assert_eq!(
        update["imageRecipeArn"],
        "arn:aws:imagebuilder:us-east-1:123456789012:image-recipe/codedeploy-agent-prod/1.0.42"
    );
    assert_eq!(update["infrastructureConfigurationArn"], "arn:infra");
    let start = &stub.bodies("StartImagePipelineExecution")[0];
    assert_eq!(start["imagePipelineArn"], PROD_PIPELINE);
    assert_eq!(start["clientToken"], "job-2");
}

#[tokio::test]
async fn start_prod_image_refuses_a_qat_image_of_another_commit() {
    let stub = Stub::start(image_builder("a2bc1d2e0a7bb2b6bc0b4d6c0ff1c1a2b3c4d5e6"));
    let params = promote_params();
    let outcome = aws::start_prod_image(
        &stub.codepipeline(),
        &stub.imagebuilder(),
        "job-3",
        Some(&params),
        PROD_PIPELINE,
    )
    .await
    .expect("reported");
    assert!(
        matches!(&outcome, JobOutcome::Failure(m) if m.contains("refusing to promote")),
        "{outcome:?}"
    );
    assert!(stub.bodies("CreateImageRecipe").is_empty());
    assert_eq!(reports(&stub), ["PutJobFailureResult"]);
}

#[tokio::test]
async fn start_prod_image_failure_reports_failure_once() {
    let stub = Stub::start(|r: &Request| match r.operation.as_str() {
        "StartImagePipelineExecution" => (400, json!({"message": "pipeline is DISABLED"})),
        other => image_builder(COMMIT)(&Request {
            operation: other.to_owned(),
            body: r.body.clone(),
        }),
    });
    let params = promote_params();
    let outcome = aws::start_prod_image(
        &stub.codepipeline(),
        &stub.imagebuilder(),
        "job-3",
        Some(&params),
        PROD_PIPELINE,
    )
    .await
    .expect("reported");
    assert!(
        matches!(&outcome, JobOutcome::Failure(m) if m.contains("StartImagePipelineExecution failed")),
        "{outcome:?}"
    );
    assert_eq!(reports(&stub), ["PutJobFailureResult"]);
}

#[tokio::test]
async fn start_code_pipeline_sends_the_name_and_token() {
    let stub = Stub::start(|_: &Request| (200, json!({"pipelineExecutionId": "exec-9"})));
    let id = aws::start_code_pipeline(
        &stub.codepipeline(),
        "codedeploy-agent-qat",
        "token-1",
        COMMIT,
        &[("ImageArn", QAT_IMAGE)],
    )
    .await
    .expect("started");
    assert_eq!(id, "exec-9");
    let body = &stub.bodies("StartPipelineExecution")[0];
    assert_eq!(body["name"], "codedeploy-agent-qat");
    assert_eq!(body["clientRequestToken"], "token-1");
    // The Source action runs the image's commit, not the branch head.
    assert_eq!(
        body["sourceRevisions"],
        json!([{"actionName": "Source", "revisionType": "COMMIT_ID", "revisionValue": COMMIT}])
    );
    assert_eq!(
        body["variables"],
        json!([{"name": "ImageArn", "value": QAT_IMAGE}])
    );
}

//! `Custom::ProdBlueGreenDeploymentGroup`: the production blue/green deployment group, owned
//! through the CodeDeploy API instead of `AWS::CodeDeploy::DeploymentGroup`.
//!
//! Why: CloudFormation refuses `GreenFleetProvisioningOption: COPY_AUTO_SCALING_GROUP` together
//! with `AutoScalingGroups` ("Property AutoScalingGroups cannot be specified") and without them
//! ("Exactly one AutoScaling group must be specified"), reported and open in
//! <https://github.com/aws-cloudformation/cloudformation-coverage-roadmap/issues/2071> and
//! <https://github.com/aws/aws-cdk/issues/30555>. And with COPY_AUTO_SCALING_GROUP CodeDeploy
//! creates a new group for the green fleet and (TerminateBlueInstancesOnDeploymentSuccess)
//! deletes the original, so an original group owned by CloudFormation breaks every later stack
//! update (<https://docs.aws.amazon.com/codedeploy/latest/userguide/deployment-groups-create-blue-green.html>).
//! So this resource creates the first (blue) Auto Scaling group itself, outside CloudFormation,
//! creates the deployment group on it, and on later updates leaves whichever group CodeDeploy
//! currently deploys to in place. Delete removes the deployment group and every group it
//! references (CodeDeploy's copies included).

use std::collections::BTreeMap;

use serde_json::Value;

/// The resource's properties (CloudFormation passes every scalar as a string).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSpec {
    pub application_name: String,
    pub deployment_group_name: String,
    pub service_role_arn: String,
    pub target_group_name: String,
    pub target_group_arn: String,
    /// Name of the first (blue) Auto Scaling group this resource creates.
    pub auto_scaling_group_name: String,
    pub launch_template_id: String,
    pub launch_template_version: String,
    /// Comma-separated subnet ids.
    pub subnets: String,
    pub min_size: i32,
    pub max_size: i32,
    pub desired_capacity: i32,
    /// CloudWatch alarms that stop and roll back a deployment.
    pub alarm_names: Vec<String>,
    pub termination_wait_minutes: i32,
}

fn string(props: &serde_json::Map<String, Value>, key: &str) -> Result<String, String> {
    match props.get(key) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        _ => Err(format!("property {key} is required")),
    }
}

fn number(props: &serde_json::Map<String, Value>, key: &str) -> Result<i32, String> {
    let s = string(props, key)?;
    s.parse()
        .map_err(|_| format!("property {key} must be a whole number, got {s:?}"))
}

pub fn spec(props: &serde_json::Map<String, Value>) -> Result<GroupSpec, String> {
    let alarm_names = match props.get("AlarmNames") {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        Some(Value::String(s)) if !s.is_empty() => s.split(',').map(str::to_owned).collect(),
        _ => Vec::new(),
    };
    Ok(GroupSpec {
        application_name: string(props, "ApplicationName")?,
        deployment_group_name: string(props, "DeploymentGroupName")?,
        service_role_arn: string(props, "ServiceRoleArn")?,
        target_group_name: string(props, "TargetGroupName")?,
        target_group_arn: string(props, "TargetGroupArn")?,
        auto_scaling_group_name: string(props, "AutoScalingGroupName")?,
        launch_template_id: string(props, "LaunchTemplateId")?,
        launch_template_version: string(props, "LaunchTemplateVersion")?,
        subnets: string(props, "Subnets")?,
        min_size: number(props, "MinSize")?,
        max_size: number(props, "MaxSize")?,
        desired_capacity: number(props, "DesiredCapacity")?,
        alarm_names,
        termination_wait_minutes: number(props, "TerminationWaitTimeInMinutes").unwrap_or(60),
    })
}

/// What a request does, given what exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Create the blue group (when it does not exist yet), then the deployment group on it.
    Create { create_blue_group: bool },
    /// Update the deployment group's settings, keep the groups CodeDeploy deploys to, and
    /// point them at the launch template version.
    Update { groups: Vec<String> },
    /// Delete the deployment group, then these Auto Scaling groups.
    Delete { groups: Vec<String> },
    /// A Delete of a resource whose Create failed (no deployment group): nothing to do.
    Nothing,
}

/// `group_asgs`: the Auto Scaling groups the deployment group references now (None when the
/// deployment group does not exist); `blue_exists`: whether the blue group exists.
pub fn plan(
    request_type: &str,
    spec_asg: &str,
    group_asgs: Option<&[String]>,
    blue_exists: bool,
) -> Result<Plan, String> {
    match (request_type, group_asgs) {
        ("Create", None) | ("Update", None) => Ok(Plan::Create {
            create_blue_group: !blue_exists,
        }),
        ("Create", Some(_)) => Err(
            "the deployment group already exists; it is not owned by this stack (delete it or change DeploymentGroupName)"
                .into(),
        ),
        ("Update", Some(groups)) => Ok(Plan::Update {
            groups: groups.to_vec(),
        }),
        ("Delete", None) if !blue_exists => Ok(Plan::Nothing),
        ("Delete", groups) => {
            let mut all: Vec<String> = groups.map(<[String]>::to_vec).unwrap_or_default();
            if blue_exists && !all.iter().any(|g| g == spec_asg) {
                all.push(spec_asg.to_owned());
            }
            Ok(Plan::Delete { groups: all })
        }
        (other, _) => Err(format!("unknown RequestType {other}")),
    }
}

/// The body PUT to the pre-signed ResponseURL
/// (<https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/crpg-ref-responses.html>).
pub fn response_body(
    request: &crate::events::CustomResourceRequest,
    physical_id: &str,
    outcome: Result<BTreeMap<String, String>, String>,
) -> Value {
    let (status, reason, data) = match outcome {
        Ok(data) => ("SUCCESS", "OK".to_owned(), data),
        Err(reason) => ("FAILED", reason, BTreeMap::new()),
    };
    serde_json::json!({
        "Status": status,
        // CloudFormation shows the reason in the stack events; it must stay under 4 KB.
        "Reason": reason.chars().take(3000).collect::<String>(),
        "PhysicalResourceId": physical_id,
        "StackId": request.stack_id,
        "RequestId": request.request_id,
        "LogicalResourceId": request.logical_resource_id,
        "Data": data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_create_makes_the_blue_group() {
        assert_eq!(
            plan("Create", "blue", None, false),
            Ok(Plan::Create {
                create_blue_group: true
            })
        );
        // A retried create after the group was made but the deployment group failed.
        assert_eq!(
            plan("Create", "blue", None, true),
            Ok(Plan::Create {
                create_blue_group: false
            })
        );
    }

    #[test]
    fn update_keeps_codedeploys_copy() {
        let groups = vec!["CodeDeploy_codedeploy-agent-prod-bluegreen_d-ABC".to_owned()];
        assert_eq!(
            plan("Update", "blue", Some(&groups), false),
            Ok(Plan::Update {
                groups: groups.clone()
            })
        );
    }

    #[test]
    fn delete_removes_the_copies_and_the_blue_group() {
        let groups = vec!["CodeDeploy_x_d-1".to_owned()];
        assert_eq!(
            plan("Delete", "blue", Some(&groups), true),
            Ok(Plan::Delete {
                groups: vec!["CodeDeploy_x_d-1".into(), "blue".into()]
            })
        );
        assert_eq!(plan("Delete", "blue", None, false), Ok(Plan::Nothing));
        assert!(plan("Create", "blue", Some(&groups), true).is_err());
    }

    #[test]
    fn properties_as_cloudformation_sends_them() {
        let props: serde_json::Map<String, Value> = serde_json::from_str(r#"{
          "ServiceToken": "arn:aws:lambda:us-east-1:123456789012:function:x",
          "ApplicationName": "codedeploy-agent-prod", "DeploymentGroupName": "codedeploy-agent-prod-bluegreen",
          "ServiceRoleArn": "arn:aws:iam::123456789012:role/r", "TargetGroupName": "tg", "TargetGroupArn": "arn:tg",
          "AutoScalingGroupName": "codedeploy-agent-prod", "LaunchTemplateId": "lt-1", "LaunchTemplateVersion": "1",
          "Subnets": "subnet-a,subnet-b", "MinSize": "1", "MaxSize": "20", "DesiredCapacity": "2",
          "AlarmNames": ["codedeploy-agent-prod-unhealthy-hosts"]}"#).expect("json");
        let s = spec(&props).expect("spec");
        assert_eq!(s.desired_capacity, 2);
        assert_eq!(
            s.alarm_names,
            vec!["codedeploy-agent-prod-unhealthy-hosts".to_owned()]
        );
        assert_eq!(s.termination_wait_minutes, 60);
        let mut missing = props.clone();
        missing.remove("ServiceRoleArn");
        assert_eq!(
            spec(&missing),
            Err("property ServiceRoleArn is required".into())
        );
    }
}

//! CloudFormation custom resource `Custom::ProdBlueGreenDeploymentGroup` (see
//! `pipeline_lambdas::custom_resource` for why). Always answers CloudFormation, also on error.

use std::collections::BTreeMap;

use aws_sdk_codedeploy::types::{
    Alarm, AlarmConfiguration, AutoRollbackConfiguration, AutoRollbackEvent,
    BlueGreenDeploymentConfiguration, BlueInstanceTerminationOption, DeploymentOption,
    DeploymentReadyAction, DeploymentReadyOption, DeploymentStyle, DeploymentType,
    GreenFleetProvisioningAction, GreenFleetProvisioningOption, InstanceAction, LoadBalancerInfo,
    TargetGroupInfo,
};
use lambda_runtime::{Error, LambdaEvent, service_fn};
use pipeline_lambdas::custom_resource::{self, GroupSpec, Plan};
use pipeline_lambdas::events::CustomResourceRequest;

type Clients = (aws_sdk_codedeploy::Client, aws_sdk_autoscaling::Client);

fn chain<E: std::error::Error>(op: &'static str) -> impl FnOnce(E) -> String {
    move |e| {
        format!(
            "{op} failed: {}",
            aws_sdk_codedeploy::error::DisplayErrorContext(e)
        )
    }
}

async fn group_asgs(
    cd: &aws_sdk_codedeploy::Client,
    s: &GroupSpec,
) -> Result<Option<Vec<String>>, String> {
    match cd
        .get_deployment_group()
        .application_name(&s.application_name)
        .deployment_group_name(&s.deployment_group_name)
        .send()
        .await
    {
        Ok(out) => Ok(Some(
            out.deployment_group_info()
                .map(|i| {
                    i.auto_scaling_groups()
                        .iter()
                        .filter_map(|g| g.name().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
        )),
        Err(e)
            if e.as_service_error().is_some_and(|s| {
                s.is_deployment_group_does_not_exist_exception()
                    || s.is_application_does_not_exist_exception()
            }) =>
        {
            Ok(None)
        }
        Err(e) => Err(chain("GetDeploymentGroup")(e)),
    }
}

async fn asg_exists(asg: &aws_sdk_autoscaling::Client, name: &str) -> Result<bool, String> {
    let out = asg
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(name)
        .send()
        .await
        .map_err(chain("DescribeAutoScalingGroups"))?;
    Ok(!out.auto_scaling_groups().is_empty())
}

fn lt(s: &GroupSpec) -> aws_sdk_autoscaling::types::LaunchTemplateSpecification {
    aws_sdk_autoscaling::types::LaunchTemplateSpecification::builder()
        .launch_template_id(&s.launch_template_id)
        .version(&s.launch_template_version)
        .build()
}

fn blue_green(s: &GroupSpec) -> BlueGreenDeploymentConfiguration {
    BlueGreenDeploymentConfiguration::builder()
        .green_fleet_provisioning_option(
            GreenFleetProvisioningOption::builder()
                .action(GreenFleetProvisioningAction::CopyAutoScalingGroup)
                .build(),
        )
        .deployment_ready_option(
            DeploymentReadyOption::builder()
                .action_on_timeout(DeploymentReadyAction::ContinueDeployment)
                .build(),
        )
        .terminate_blue_instances_on_deployment_success(
            BlueInstanceTerminationOption::builder()
                .action(InstanceAction::Terminate)
                .termination_wait_time_in_minutes(s.termination_wait_minutes)
                .build(),
        )
        .build()
}

fn alarms(s: &GroupSpec) -> AlarmConfiguration {
    let mut b = AlarmConfiguration::builder().enabled(!s.alarm_names.is_empty());
    for name in &s.alarm_names {
        b = b.alarms(Alarm::builder().name(name).build());
    }
    b.build()
}

fn rollback() -> AutoRollbackConfiguration {
    AutoRollbackConfiguration::builder()
        .enabled(true)
        .events(AutoRollbackEvent::DeploymentFailure)
        .events(AutoRollbackEvent::DeploymentStopOnAlarm)
        .events(AutoRollbackEvent::DeploymentStopOnRequest)
        .build()
}

fn style() -> DeploymentStyle {
    DeploymentStyle::builder()
        .deployment_type(DeploymentType::BlueGreen)
        .deployment_option(DeploymentOption::WithTrafficControl)
        .build()
}

fn lb(s: &GroupSpec) -> LoadBalancerInfo {
    LoadBalancerInfo::builder()
        .target_group_info_list(
            TargetGroupInfo::builder()
                .name(&s.target_group_name)
                .build(),
        )
        .build()
}

async fn handle(
    clients: &Clients,
    req: &CustomResourceRequest,
) -> Result<BTreeMap<String, String>, String> {
    let (cd, asg) = clients;
    let s = custom_resource::spec(&req.resource_properties)?;
    let current = group_asgs(cd, &s).await?;
    let blue_exists = asg_exists(asg, &s.auto_scaling_group_name).await?;
    let plan = custom_resource::plan(
        &req.request_type,
        &s.auto_scaling_group_name,
        current.as_deref(),
        blue_exists,
    )?;
    tracing::info!(?plan, request = %req.request_type, "deployment group plan");
    match plan {
        Plan::Create { create_blue_group } => {
            if create_blue_group {
                asg.create_auto_scaling_group()
                    .auto_scaling_group_name(&s.auto_scaling_group_name)
                    .launch_template(lt(&s))
                    .min_size(s.min_size)
                    .max_size(s.max_size)
                    .desired_capacity(s.desired_capacity)
                    .vpc_zone_identifier(&s.subnets)
                    .target_group_arns(&s.target_group_arn)
                    // Target health gates traffic in CodeDeploy's AllowTraffic step; EC2 checks
                    // here keep stock bootstrap instances from being replaced in a loop.
                    .health_check_type("EC2")
                    .health_check_grace_period(300)
                    .send()
                    .await
                    .map_err(chain("CreateAutoScalingGroup"))?;
            }
            cd.create_deployment_group()
                .application_name(&s.application_name)
                .deployment_group_name(&s.deployment_group_name)
                .service_role_arn(&s.service_role_arn)
                .deployment_config_name("CodeDeployDefault.OneAtATime")
                .auto_scaling_groups(&s.auto_scaling_group_name)
                .deployment_style(style())
                .blue_green_deployment_configuration(blue_green(&s))
                .load_balancer_info(lb(&s))
                .auto_rollback_configuration(rollback())
                .alarm_configuration(alarms(&s))
                .send()
                .await
                .map_err(chain("CreateDeploymentGroup"))?;
        }
        Plan::Update { groups } => {
            cd.update_deployment_group()
                .application_name(&s.application_name)
                .current_deployment_group_name(&s.deployment_group_name)
                .service_role_arn(&s.service_role_arn)
                .deployment_config_name("CodeDeployDefault.OneAtATime")
                .set_auto_scaling_groups(Some(groups.clone()))
                .deployment_style(style())
                .blue_green_deployment_configuration(blue_green(&s))
                .load_balancer_info(lb(&s))
                .auto_rollback_configuration(rollback())
                .alarm_configuration(alarms(&s))
                .send()
                .await
                .map_err(chain("UpdateDeploymentGroup"))?;
            for g in &groups {
                asg.update_auto_scaling_group()
                    .auto_scaling_group_name(g)
                    .launch_template(lt(&s))
                    .send()
                    .await
                    .map_err(chain("UpdateAutoScalingGroup"))?;
            }
        }
        Plan::Delete { groups } => {
            if current.is_some() {
                cd.delete_deployment_group()
                    .application_name(&s.application_name)
                    .deployment_group_name(&s.deployment_group_name)
                    .send()
                    .await
                    .map_err(chain("DeleteDeploymentGroup"))?;
            }
            for g in &groups {
                asg.delete_auto_scaling_group()
                    .auto_scaling_group_name(g)
                    .force_delete(true)
                    .send()
                    .await
                    .map_err(chain("DeleteAutoScalingGroup"))?;
            }
        }
        Plan::Nothing => {}
    }
    Ok(BTreeMap::from([(
        "DeploymentGroupName".to_owned(),
        s.deployment_group_name,
    )]))
}

fn main() -> Result<(), Error> {
    pipeline_lambdas::init_logging();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let config = pipeline_lambdas::aws::sdk_config().await;
        let clients: Clients = (
            aws_sdk_codedeploy::Client::new(&config),
            aws_sdk_autoscaling::Client::new(&config),
        );
        let http = reqwest::Client::builder().build()?;
        lambda_runtime::run(service_fn(|event: LambdaEvent<CustomResourceRequest>| {
            let (clients, http) = (&clients, &http);
            async move {
                let req = &event.payload;
                let outcome = handle(clients, req).await;
                if let Err(reason) = &outcome {
                    tracing::warn!(%reason, "custom resource request failed");
                }
                let physical = req
                    .physical_resource_id
                    .clone()
                    .or_else(|| {
                        custom_resource::spec(&req.resource_properties)
                            .ok()
                            .map(|s| s.deployment_group_name)
                    })
                    .unwrap_or_else(|| req.logical_resource_id.clone());
                let body = custom_resource::response_body(req, &physical, outcome);
                // The pre-signed URL is signed for an empty Content-Type.
                http.put(&req.response_url)
                    .header("content-type", "")
                    .body(body.to_string())
                    .send()
                    .await?
                    .error_for_status()?;
                Ok::<_, Error>(body)
            }
        }))
        .await
    })
}

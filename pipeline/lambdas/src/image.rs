//! Image Builder calls: a new recipe version per release, the image pipeline pointed at it,
//! one execution started; and reading back which commit an image baked.
//!
//! `UpdateImagePipeline` replaces the whole pipeline definition, so every field the pipeline
//! has is sent back unchanged except the recipe
//! (<https://docs.aws.amazon.com/imagebuilder/latest/APIReference/API_UpdateImagePipeline.html>).

use aws_sdk_imagebuilder::Client;
use aws_sdk_imagebuilder::types::{ComponentConfiguration, ComponentParameter};

use crate::aws::AwsCallError;
use crate::release;

fn err(operation: &'static str) -> impl FnOnce(String) -> AwsCallError {
    move |message| AwsCallError { operation, message }
}

fn sdk<E: std::error::Error>(operation: &'static str) -> impl FnOnce(E) -> AwsCallError {
    move |e| AwsCallError {
        operation,
        message: aws_sdk_imagebuilder::error::DisplayErrorContext(e).to_string(),
    }
}

fn params_of(c: &ComponentConfiguration) -> Vec<(String, String)> {
    c.parameters()
        .iter()
        .map(|p| (p.name().to_owned(), p.value().join(",")))
        .collect()
}

fn component_with(
    c: &ComponentConfiguration,
    params: &[(String, String)],
) -> Result<ComponentConfiguration, AwsCallError> {
    let mut b = ComponentConfiguration::builder().component_arn(c.component_arn());
    for (name, value) in params {
        b = b.parameters(
            ComponentParameter::builder()
                .name(name)
                .value(value)
                .build()
                .map_err(sdk("CreateImageRecipe"))?,
        );
    }
    b.build().map_err(sdk("CreateImageRecipe"))
}

/// What the new recipe differs in from the pipeline's current one.
pub struct RecipeChange<'a> {
    pub version: &'a str,
    /// Parameters set on the agent component.
    pub agent_parameters: &'a [(String, String)],
    /// Production: the QAT image as parent, and only the agent component (the parent already
    /// has the OS updates and hardening QAT tested; running them again would change packages).
    pub parent_image: Option<&'a str>,
    pub description: String,
}

/// New recipe version (reused when a redelivery already created it), pipeline updated to it,
/// one execution started with `client_token`. Returns the image build version ARN.
pub async fn bake(
    client: &Client,
    pipeline_arn: &str,
    change: &RecipeChange<'_>,
    client_token: &str,
) -> Result<String, AwsCallError> {
    let pipeline = client
        .get_image_pipeline()
        .image_pipeline_arn(pipeline_arn)
        .send()
        .await
        .map_err(sdk("GetImagePipeline"))?
        .image_pipeline
        .ok_or_else(|| err("GetImagePipeline")(format!("{pipeline_arn} not found")))?;
    let current = pipeline
        .image_recipe_arn()
        .ok_or_else(|| err("GetImagePipeline")(format!("{pipeline_arn} has no image recipe")))?
        .to_owned();
    let recipe = client
        .get_image_recipe()
        .image_recipe_arn(&current)
        .send()
        .await
        .map_err(sdk("GetImageRecipe"))?
        .image_recipe
        .ok_or_else(|| err("GetImageRecipe")(format!("{current} not found")))?;

    let mut components = Vec::new();
    let mut found_agent = false;
    for c in recipe.components() {
        let params = params_of(c);
        if release::is_agent_component(&params) {
            found_agent = true;
            components.push(component_with(
                c,
                &release::merge_parameters(&params, change.agent_parameters),
            )?);
        } else if change.parent_image.is_none() {
            components.push(c.clone());
        }
    }
    if !found_agent {
        return Err(err("GetImageRecipe")(format!(
            "recipe {current} has no agent component (one with a Sha256 parameter)"
        )));
    }
    let name = recipe.name().unwrap_or_default().to_owned();
    let new_arn = release::recipe_arn_at(&current, change.version);
    let created = client
        .create_image_recipe()
        .name(&name)
        .semantic_version(change.version)
        .description(change.description.chars().take(1024).collect::<String>())
        .parent_image(
            change
                .parent_image
                .or(recipe.parent_image())
                .unwrap_or_default(),
        )
        .set_components(Some(components))
        .set_block_device_mappings(Some(recipe.block_device_mappings().to_vec()))
        .set_working_directory(recipe.working_directory().map(str::to_owned))
        .client_token(
            format!("{client_token}-recipe")
                .chars()
                .take(36)
                .collect::<String>(),
        )
        .send()
        .await;
    let recipe_arn = match created {
        Ok(out) => out.image_recipe_arn.unwrap_or(new_arn),
        // A redelivered invocation: the recipe of this version exists already.
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_resource_already_exists_exception()) =>
        {
            new_arn
        }
        Err(e) => return Err(sdk("CreateImageRecipe")(e)),
    };

    client
        .update_image_pipeline()
        .image_pipeline_arn(pipeline_arn)
        .set_description(pipeline.description().map(str::to_owned))
        .image_recipe_arn(&recipe_arn)
        .set_infrastructure_configuration_arn(
            pipeline
                .infrastructure_configuration_arn()
                .map(str::to_owned),
        )
        .set_distribution_configuration_arn(
            pipeline.distribution_configuration_arn().map(str::to_owned),
        )
        .set_image_tests_configuration(pipeline.image_tests_configuration().cloned())
        .set_enhanced_image_metadata_enabled(pipeline.enhanced_image_metadata_enabled())
        .set_schedule(pipeline.schedule().cloned())
        .set_status(pipeline.status().cloned())
        .set_image_scanning_configuration(pipeline.image_scanning_configuration().cloned())
        .set_execution_role(pipeline.execution_role().map(str::to_owned))
        .set_workflows(Some(pipeline.workflows().to_vec()).filter(|w| !w.is_empty()))
        .set_logging_configuration(pipeline.logging_configuration().cloned())
        .client_token(
            format!("{client_token}-pipeline")
                .chars()
                .take(36)
                .collect::<String>(),
        )
        .send()
        .await
        .map_err(sdk("UpdateImagePipeline"))?;

    crate::aws::start_image_pipeline(client, pipeline_arn, client_token).await
}

/// What an image baked: its recipe's version and the agent component's parameters.
pub struct Baked {
    pub recipe_version: String,
    pub agent_parameters: Vec<(String, String)>,
}

impl Baked {
    pub fn commit(&self) -> Option<&str> {
        release::commit_of(&self.agent_parameters)
    }
}

pub async fn baked(client: &Client, image_arn: &str) -> Result<Baked, AwsCallError> {
    let image = client
        .get_image()
        .image_build_version_arn(image_arn)
        .send()
        .await
        .map_err(sdk("GetImage"))?
        .image
        .ok_or_else(|| err("GetImage")(format!("{image_arn} not found")))?;
    let recipe = image
        .image_recipe()
        .ok_or_else(|| err("GetImage")(format!("{image_arn} has no image recipe")))?;
    let agent_parameters = recipe
        .components()
        .iter()
        .map(params_of)
        .find(|p| release::is_agent_component(p))
        .unwrap_or_default();
    Ok(Baked {
        recipe_version: recipe.version().unwrap_or_default().to_owned(),
        agent_parameters,
    })
}

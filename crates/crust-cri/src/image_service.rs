//! ImageService: pull, list, inspect and remove images, and report the
//! disk they use.

use base64::Engine;
use crust_cri_api::v1 as cri;
use crust_cri_api::v1::image_service_server::ImageService;
use tonic::{Request, Response, Status};

use crust_image::{Credentials, ErrorKind, ImageError};
use crust_store::ImageRecord;

use crate::stream_lists::{ListStream, stream_of};
use crate::{Cri, Rpc};

pub(crate) fn image_status(e: ImageError) -> Status {
    let message = e.to_string();
    match e.kind() {
        ErrorKind::InvalidArgument => Status::invalid_argument(message),
        ErrorKind::NotFound => Status::not_found(message),
        ErrorKind::PermissionDenied => Status::permission_denied(message),
        ErrorKind::Unavailable => Status::unavailable(message),
        ErrorKind::DeadlineExceeded => Status::deadline_exceeded(message),
        ErrorKind::FailedPrecondition => Status::failed_precondition(message),
        ErrorKind::Internal => Status::internal(message),
    }
}

fn image_name(spec: Option<&cri::ImageSpec>) -> Result<&str, Status> {
    match spec.map(|s| s.image.as_str()) {
        Some(name) if !name.is_empty() => {
            tracing::Span::current().record("image", name);
            Ok(name)
        }
        _ => Err(Status::invalid_argument(
            "image.image (the image name) is required",
        )),
    }
}

/// CRI's AuthConfig as crust's credentials. `auth` is base64("user:pass").
fn credentials(auth: Option<&cri::AuthConfig>) -> Result<Credentials, Status> {
    let Some(auth) = auth else {
        return Ok(Credentials::default());
    };
    let mut creds = Credentials {
        username: auth.username.clone(),
        password: auth.password.clone(),
        registry_token: auth.registry_token.clone(),
        server_address: auth.server_address.clone(),
        ..Default::default()
    };
    if !auth.auth.is_empty() {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.auth.trim())
            .ok()
            .and_then(|d| String::from_utf8(d).ok())
            .ok_or_else(|| {
                Status::invalid_argument("auth.auth is not base64 of \"user:password\"")
            })?;
        let (user, pass) = decoded.split_once(':').ok_or_else(|| {
            Status::invalid_argument("auth.auth must decode to \"user:password\"")
        })?;
        creds.username = user.to_string();
        creds.password = pass.to_string();
    }
    creds.identity_token = auth.identity_token.clone();
    Ok(creds)
}

fn to_cri_image(image: &ImageRecord) -> cri::Image {
    // USER is "uid", "name", "uid:gid" or "name:group": CRI wants the uid
    // when numeric, the name otherwise.
    let user = image.config.user.split(':').next().unwrap_or("");
    let (uid, username) = match user.parse::<i64>() {
        Ok(uid) => (Some(cri::Int64Value { value: uid }), String::new()),
        Err(_) => (None, user.to_string()),
    };
    cri::Image {
        id: image.id.clone(),
        repo_tags: image.repo_tags.clone(),
        repo_digests: image.repo_digests.clone(),
        size: image.size,
        uid,
        username,
        spec: Some(cri::ImageSpec {
            image: image.id.clone(),
            ..Default::default()
        }),
        pinned: image.pinned,
    }
}

fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

#[tonic::async_trait]
impl ImageService for Cri {
    type StreamImagesStream = ListStream<cri::StreamImagesResponse>;

    async fn stream_images(
        &self,
        request: Request<cri::StreamImagesRequest>,
    ) -> Rpc<Self::StreamImagesStream> {
        let filter = request.into_inner().filter;
        let list = self
            .list_images(Request::new(cri::ListImagesRequest { filter }))
            .await?;
        Ok(Response::new(stream_of(
            list.into_inner().images,
            |images| cri::StreamImagesResponse { images },
        )))
    }

    async fn list_images(
        &self,
        request: Request<cri::ListImagesRequest>,
    ) -> Rpc<cri::ListImagesResponse> {
        let images = &self.runtime.images;
        let wanted = request
            .get_ref()
            .filter
            .as_ref()
            .and_then(|f| f.image.as_ref())
            .map(|s| s.image.as_str())
            .filter(|s| !s.is_empty());
        let records = match wanted {
            Some(name) => images
                .find(name)
                .map_err(image_status)?
                .into_iter()
                .collect(),
            None => images.list().map_err(image_status)?,
        };
        Ok(Response::new(cri::ListImagesResponse {
            images: records.iter().map(to_cri_image).collect(),
        }))
    }

    async fn image_status(
        &self,
        request: Request<cri::ImageStatusRequest>,
    ) -> Rpc<cri::ImageStatusResponse> {
        let request = request.into_inner();
        let name = image_name(request.image.as_ref())?;
        let images = &self.runtime.images;
        let Some(record) = images.find(name).map_err(image_status)? else {
            // CRI: an absent image is a nil image, not an error.
            return Ok(Response::new(cri::ImageStatusResponse::default()));
        };
        let mut info = std::collections::HashMap::new();
        if request.verbose {
            let details = serde_json::json!({
                "imageSpec": images.read_config(&record).await.map_err(image_status)?,
                "chainID": record.layers.last().map(|l| l.chain_id.clone()).unwrap_or_default(),
                "manifestDigests": record.manifest_digests,
                "layers": record.layers.iter().map(|l| serde_json::json!({
                    "digest": l.digest, "mediaType": l.media_type, "size": l.size,
                    "diffID": l.diff_id, "chainID": l.chain_id,
                })).collect::<Vec<_>>(),
            });
            info.insert("info".to_string(), details.to_string());
        }
        Ok(Response::new(cri::ImageStatusResponse {
            image: Some(to_cri_image(&record)),
            info,
        }))
    }

    async fn pull_image(
        &self,
        request: Request<cri::PullImageRequest>,
    ) -> Rpc<cri::PullImageResponse> {
        let request = request.into_inner();
        let name = image_name(request.image.as_ref())?;
        let creds = credentials(request.auth.as_ref())?;
        let record = self
            .runtime
            .images
            .pull(name, &creds)
            .await
            .map_err(image_status)?;
        Ok(Response::new(cri::PullImageResponse {
            image_ref: record.id,
        }))
    }

    async fn remove_image(
        &self,
        request: Request<cri::RemoveImageRequest>,
    ) -> Rpc<cri::RemoveImageResponse> {
        let request = request.into_inner();
        let name = image_name(request.image.as_ref())?;
        self.runtime
            .images
            .remove(name)
            .await
            .map_err(image_status)?;
        Ok(Response::new(cri::RemoveImageResponse {}))
    }

    async fn image_fs_info(
        &self,
        _: Request<cri::ImageFsInfoRequest>,
    ) -> Rpc<cri::ImageFsInfoResponse> {
        // The walks run on the blocking pool.
        let usage = self.runtime.images.usage().await.map_err(image_status)?;
        let volumes = self.runtime.pods.volume_usage().await;
        let containers = crust_snapshot::Usage {
            bytes: usage.writable_layers.bytes + volumes.bytes,
            inodes: usage.writable_layers.inodes + volumes.inodes,
        };
        let timestamp = now_nanos();
        let filesystem = |dir: &std::path::Path, bytes: u64, inodes: u64| cri::FilesystemUsage {
            timestamp,
            fs_id: Some(cri::FilesystemIdentifier {
                mountpoint: dir.display().to_string(),
            }),
            used_bytes: Some(cri::UInt64Value { value: bytes }),
            inodes_used: Some(cri::UInt64Value { value: inodes }),
        };
        let root = &self.runtime.config.root;
        // Split (KEP-4191): images on image_fs, what containers write under
        // root; kubelet then garbage-collects and evicts for each on its
        // own. Otherwise one filesystem holds both and kubelet wants no
        // container_filesystems.
        let response = match &self.runtime.config.image_fs {
            Some(image_fs) => cri::ImageFsInfoResponse {
                image_filesystems: vec![filesystem(
                    image_fs,
                    usage.images.bytes,
                    usage.images.inodes,
                )],
                container_filesystems: vec![filesystem(root, containers.bytes, containers.inodes)],
            },
            None => cri::ImageFsInfoResponse {
                image_filesystems: vec![filesystem(
                    root,
                    usage.images.bytes + containers.bytes,
                    usage.images.inodes + containers.inodes,
                )],
                container_filesystems: vec![],
            },
        };
        Ok(Response::new(response))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_field_is_decoded() {
        let auth = cri::AuthConfig {
            auth: base64::engine::general_purpose::STANDARD.encode("crust:crust-secret"),
            ..Default::default()
        };
        let c = credentials(Some(&auth)).unwrap();
        assert_eq!(
            (c.username.as_str(), c.password.as_str()),
            ("crust", "crust-secret")
        );
        let bad = cri::AuthConfig {
            auth: "!!!".into(),
            ..Default::default()
        };
        assert_eq!(
            credentials(Some(&bad)).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
    }

    #[test]
    fn numeric_and_named_users() {
        let mut image = ImageRecord::default();
        image.config.user = "1000:2000".into();
        assert_eq!(
            to_cri_image(&image).uid,
            Some(cri::Int64Value { value: 1000 })
        );
        image.config.user = "crust:extra".into();
        let i = to_cri_image(&image);
        assert_eq!((i.uid, i.username.as_str()), (None, "crust"));
    }
}

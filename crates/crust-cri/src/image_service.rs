//! ImageService. Pulls, the content store and snapshots land with the
//! image issue; until then every RPC says so.

use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_server::ImageService;
use tonic::Request;

use crate::{Cri, Rpc, unimplemented};

#[tonic::async_trait]
impl ImageService for Cri {
    async fn list_images(
        &self,
        _: Request<cri::ListImagesRequest>,
    ) -> Rpc<cri::ListImagesResponse> {
        unimplemented("ListImages")
    }

    async fn image_status(
        &self,
        _: Request<cri::ImageStatusRequest>,
    ) -> Rpc<cri::ImageStatusResponse> {
        unimplemented("ImageStatus")
    }

    async fn pull_image(&self, _: Request<cri::PullImageRequest>) -> Rpc<cri::PullImageResponse> {
        unimplemented("PullImage")
    }

    async fn remove_image(
        &self,
        _: Request<cri::RemoveImageRequest>,
    ) -> Rpc<cri::RemoveImageResponse> {
        unimplemented("RemoveImage")
    }

    async fn image_fs_info(
        &self,
        _: Request<cri::ImageFsInfoRequest>,
    ) -> Rpc<cri::ImageFsInfoResponse> {
        unimplemented("ImageFsInfo")
    }
}

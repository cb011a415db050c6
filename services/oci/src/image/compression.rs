//! How a layer's bytes are compressed: from its media type, or from its first bytes. The
//! one rule for unpack, Diff.Apply, archive import and the layer applier.

use super::media::MediaType;

/// How a layer stream is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// Look at the stream's first bytes ([`Compression::detect`]).
    #[default]
    Auto,
    Uncompressed,
    Gzip,
    Zstd,
}

impl Compression {
    /// The compression a stream starting with `magic` uses: gzip and zstd by their magic
    /// numbers, anything else is taken as uncompressed.
    pub fn detect(magic: &[u8]) -> Compression {
        if magic.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::Uncompressed
        }
    }

    /// How a layer of `media_type` is compressed, as containerd's `DiffCompression` (and
    /// Docker's zstd layer type): OCI layers by their `+gzip`/`+zstd` suffix, Docker's gzip
    /// types as gzip, Docker's plain types [`Compression::Auto`] (they are often compressed
    /// anyway). `None` for wrapped types (`+encrypted`) and anything that is not a layer.
    pub fn of_layer(media_type: &MediaType) -> Option<Compression> {
        let mut parts = media_type.as_str().split('+');
        let base = MediaType::from(parts.next().unwrap_or_default());
        let mut ext: Vec<&str> = parts.collect();
        ext.sort_unstable();
        match (base, ext.as_slice()) {
            (MediaType::DockerLayer | MediaType::DockerLayerForeign, []) => Some(Compression::Auto),
            (MediaType::DockerLayerGzip | MediaType::DockerLayerForeignGzip, []) => {
                Some(Compression::Gzip)
            }
            (MediaType::DockerLayerZstd, []) => Some(Compression::Zstd),
            (MediaType::OciLayer | MediaType::OciLayerNondistributable, ext) => match ext {
                [] => Some(Compression::Uncompressed),
                ["gzip"] => Some(Compression::Gzip),
                ["zstd"] => Some(Compression::Zstd),
                _ => None,
            },
            _ => None,
        }
    }

    /// The media type of a Docker layer stored with this compression (an archive import's
    /// layers); `Auto` has not been looked at and counts as uncompressed.
    pub fn docker_layer_type(self) -> MediaType {
        match self {
            Compression::Auto | Compression::Uncompressed => MediaType::DockerLayer,
            Compression::Gzip => MediaType::DockerLayerGzip,
            Compression::Zstd => MediaType::DockerLayerZstd,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Compression::Auto => "auto",
            Compression::Uncompressed => "uncompressed",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn by_media_type() {
        use Compression::*;
        let c = |s: &str| Compression::of_layer(&MediaType::from(s));
        assert_eq!(
            c("application/vnd.oci.image.layer.v1.tar"),
            Some(Uncompressed)
        );
        assert_eq!(c("application/vnd.oci.image.layer.v1.tar+gzip"), Some(Gzip));
        assert_eq!(c("application/vnd.oci.image.layer.v1.tar+zstd"), Some(Zstd));
        assert_eq!(
            c("application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"),
            Some(Gzip)
        );
        assert_eq!(
            c("application/vnd.docker.image.rootfs.diff.tar.gzip"),
            Some(Gzip)
        );
        assert_eq!(
            c("application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"),
            Some(Gzip)
        );
        // Docker's plain type is often compressed anyway: sniffed, as containerd does.
        assert_eq!(
            c("application/vnd.docker.image.rootfs.diff.tar"),
            Some(Auto)
        );
        assert_eq!(
            c("application/vnd.docker.image.rootfs.diff.tar.zstd"),
            Some(Zstd)
        );
        assert_eq!(
            c("application/vnd.oci.image.layer.v1.tar+gzip+encrypted"),
            None
        );
        assert_eq!(c("application/vnd.oci.image.config.v1+json"), None);
        assert_eq!(
            c("application/vnd.cncf.helm.chart.content.v1.tar+gzip"),
            None
        );
        assert_eq!(c(""), None);
    }

    #[test]
    fn by_magic() {
        assert_eq!(Compression::detect(&[0x1f, 0x8b, 8, 0]), Compression::Gzip);
        assert_eq!(
            Compression::detect(&[0x28, 0xb5, 0x2f, 0xfd, 0]),
            Compression::Zstd
        );
        assert_eq!(Compression::detect(b"usta"), Compression::Uncompressed);
        assert_eq!(Compression::detect(&[]), Compression::Uncompressed);
        assert_eq!(
            Compression::Gzip.docker_layer_type(),
            MediaType::DockerLayerGzip
        );
    }
}

"""asyncds: image-classification datasets from Flickr tag searches, as an asyncio pipeline."""

__version__ = "0.1.0"

"""Writers of small generated datasets in the ADE20K, COCO and ImageNet layouts, all
drawn by one scene renderer (:mod:`.scenes`), for tests, demos and quickstarts."""

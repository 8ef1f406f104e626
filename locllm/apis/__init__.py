"""What sits on the Localizer and the evaluation's predictions log: prediction over a whole data set
(``dataset_prediction``, streamed, resumable, sharded over processes), its inputs (``image_sources``,
``person_boxes``) and its COCO keypoint results (``coco_results``)."""

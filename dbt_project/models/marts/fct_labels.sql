with

labels as (

    select * from {{ ref('int_labels_latest') }}

),

final as (

    select

        ----------  ids
        transaction_id,

        ---------- label
        is_fraud,
        fraud_type,

        ---------- timestamps
        label_time,

        ---------- lineage
        schema_version,
        kafka_partition,
        kafka_offset,
        ingested_at,
        label_count

    from labels

)

select * from final

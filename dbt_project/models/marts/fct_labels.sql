-- depends_on: {{ ref('stg_bronze__labels') }}
{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='transaction_id',
        full_refresh=full_refresh_on_replay(),
    )
}}
{%- set watermark = own_watermark() %}
with

{% if watermark is none %}

labels as (

    select * from {{ ref('int_labels_latest') }}

),

{% else %}

-- incremental: the deliveries ingested since the last build, merged into their ids' rows
{{ merge_new_deliveries(
    ref('stg_bronze__labels'), 'transaction_id', 'label_time desc, ingested_at desc, kafka_partition desc, kafka_offset desc', 'label_count', watermark, drop=[]
) }},

labels as (select * from merged),

{% endif %}

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

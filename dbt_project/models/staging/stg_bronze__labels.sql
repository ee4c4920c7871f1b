with

source as (

    select * from {{ source('bronze', 'labels') }}
    -- replay: rebuild from bronze as it stood up to a date (`--vars '{replay_to: 2026-11-01}'`)
    where _event_date <= cast('{{ var("replay_to", "9999-12-31") }}' as date)

),

renamed as (

    select

        ----------  ids (an empty string is a missing id)
        nullif(transaction_id, '') as transaction_id,

        ---------- strings
        fraud_type,

        ---------- booleans
        cast(is_fraud as boolean) as is_fraud,

        ---------- timestamps
        cast(label_time as timestamptz) as label_time,

        ---------- lineage
        cast(schema_version as integer) as schema_version,
        _topic as kafka_topic,
        cast(_partition as integer) as kafka_partition,
        cast(_offset as bigint) as kafka_offset,
        cast(_ingested_at as timestamptz) as ingested_at

    from source

)

select * from renamed
